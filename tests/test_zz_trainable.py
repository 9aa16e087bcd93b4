"""The Tune trainable outside a Tune run: collapse stop, divergence, checkpoint fallback.

Named to run last: after a standalone tune.Trainable, torch in the same process ran 10x+ slower here
(cause not found yet), so nothing else runs after it."""

import torch

from raynas.trainable import SearchTrainable

TINY = {"dataset": "digits", "batch_size": 16, "max_steps_per_epoch": 2, "eval_batches": 1, "device": "cpu",
        "epochs": 3, "model": {"C": 4, "layers": 1}}


def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    t = SearchTrainable(config=TINY)
    t.step()
    (tmp_path / "checkpoint_000001").mkdir()
    t.save_checkpoint(str(tmp_path / "checkpoint_000001"))
    t.step()
    (tmp_path / "checkpoint_000002").mkdir()
    t.save_checkpoint(str(tmp_path / "checkpoint_000002"))
    broken = tmp_path / "checkpoint_000002" / "search.pt"
    broken.write_bytes(broken.read_bytes()[:1000])  # truncated
    again = SearchTrainable(config=TINY)
    again.load_checkpoint(str(tmp_path / "checkpoint_000002"))
    err = capsys.readouterr().err
    assert str(broken) in err and "checkpoint_000001" in err
    assert again.search.epoch == 1
    t.stop()
    again.stop()
    import ray
    assert not ray.is_initialized()  # a trainable used outside Tune starts no Ray instance


def test_collapse_stop_and_divergence_statuses():
    t = SearchTrainable(config={**TINY, "collapse_skip": 1})
    with torch.no_grad():  # skip_connect dominates every edge
        t.search.net.alphas["cell"].zero_()
        t.search.net.alphas["cell"][:, 1] = 10.0
    r = t.step()
    assert r["status"] == "stopped_collapse" and r["done"] and r["skip_count"] >= 1
    t.stop()
    for mode in ("warn", "fail"):  # none dominates every edge: a degenerate cell, a collapse only with fail
        t = SearchTrainable(config={**TINY, "collapse_degenerate": mode, "arch": {"lr": 0.0}})
        with torch.no_grad():
            t.search.net.alphas["cell"].zero_()
            t.search.net.alphas["cell"][:, 0] = 10.0
        r = t.step()
        assert r["degenerate"] and r["degenerate_reason"] == "NB201 cell: every edge is none"
        assert (r["status"], r["done"]) == (("running", False) if mode == "warn" else ("stopped_collapse", True))
        assert mode == "warn" or r["error"] == "degenerate cell at epoch 1: NB201 cell: every edge is none"
        t.stop()
    d = SearchTrainable(config={**TINY, "optim": {"lr": 1e30, "grad_clip": 1e30}})
    r = d.step()
    assert r["status"] == "diverged" and r["done"] and r["epoch"] == 1 and "diverged at epoch 0" in r["error"]
    d.stop()
