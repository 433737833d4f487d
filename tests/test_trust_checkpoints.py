"""Checkpoints survive a kill at every file-system step and a full disk (the run goes on, later ones are written);
a resume takes the newest checkpoint whose files match their manifest and refuses one that cannot continue."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from fault_points import DONE, KILLED, dry_run, fill, forked, kill_before, one_thread, small_tmpfs
from helpers import StopAt, classification_pairs, mlp_with_lora
from IPython.core.error import UsageError

import lora_nb
from lora_nb.core import folder_swap
from lora_nb.core.files import MANIFEST, verify
from lora_nb.core.paths import output_folder
from lora_nb.core.training.longrun import checkpoint_files as checkpoint
from lora_nb.errors import CheckpointError, LoraNBWarning, OptionError

PAIRS = classification_pairs(40)  # 5 batches of 8 an epoch
MLP = dict(batch_size=8, lr=1e-2, background=False, callbacks=[])
WEIGHTS = Path("adapter") / "adapter_model.safetensors"



@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():  # these tests fork
        yield

def _train(save_dir: Path, steps: int, seed: int = 0, **options):
    torch.manual_seed(seed)
    where = {"save_dir": save_dir} if options.get("save_every") else {}
    return lora_nb.train(mlp_with_lora(), PAIRS, steps=steps, seed=seed, **where, **{**MLP, **options})


def _holds(folder: Path, versions: dict[str, bytes]) -> str:
    """Which complete checkpoint ``folder`` holds after lora_nb's next touch ('none' if none): it verifies, reads
    back with every part of the run's state, and its adapter is exactly one version's."""
    folder_swap.recover(folder)
    if not os.path.lexists(folder):
        return "none"
    assert verify(folder).ok, verify(folder)
    found, state, tensors, _, _ = checkpoint.read_checkpoint(folder)
    assert found == folder and not checkpoint.missing_state(state, tensors)
    data = (folder / WEIGHTS).read_bytes()
    name = next((name for name, expected in versions.items() if data == expected), None)
    assert name is not None, "the adapter is neither version's"
    return name


@pytest.mark.parametrize("rewrite", [False, True])
def test_a_checkpoint_killed_before_any_step_leaves_the_old_or_the_new_one(tmp_path, rewrite):
    """A 2-step run writing checkpoint-000002, killed before each file-system step of the whole run (the
    checkpoint's writes are all of them); `rewrite`: an older checkpoint-000002 (another seed) is there already."""
    work, old = tmp_path / "work", tmp_path / "old"
    _train(old, 2, seed=1, save_every=2)
    old_bytes = (old / "checkpoint-000002" / WEIGHTS).read_bytes()

    def reset() -> None:
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(old, work) if rewrite else work.mkdir()

    def run() -> int:
        return _train(work, 2, save_every=2).step

    reset()
    steps = dry_run(run)
    new_bytes = (work / "checkpoint-000002" / WEIGHTS).read_bytes()
    assert new_bytes != old_bytes
    tried, survived, problems = 0, 0, []
    for n in range(1, len(steps) + 2):
        reset()
        code = kill_before(run, n)
        assert (code == DONE) == (n > len(steps))
        tried += 1
        try:
            found = _holds(work / "checkpoint-000002", {"old": old_bytes, "new": new_bytes})
            assert found != "none" or not rewrite, "no checkpoint at the path"
            assert found == "new" or code == KILLED
            output_folder(work, "save_dir")  # what the next run does first, and its checkpointer after each write:
            checkpoint.prune(work, None)  # leftovers of the killed run removed
            assert sorted(os.listdir(work)) == (["checkpoint-000002"] if found != "none" else []), os.listdir(work)
            assert sorted(os.listdir(tmp_path)) == ["old", "work"], os.listdir(tmp_path)
            survived += 1
        except AssertionError as exc:
            problems.append(f"before step {n} ({steps[n - 1] if n <= len(steps) else 'end'}): {exc}")
    print(f"kill points checkpoint{' rewrite' if rewrite else ''}: {survived}/{tried} survived ({len(steps)} steps)")
    assert not problems and tried > 10, problems


class _SpaceReturns(lora_nb.Callback):
    """Raises the file-size limit back to what it was at step ``step`` (the disk has room again)."""

    def __init__(self, step: int, limit: tuple[int, int]) -> None:
        self.step, self.limit = step, limit

    def on_step_end(self, run, record) -> None:
        import resource

        if record["step"] == self.step:
            resource.setrlimit(resource.RLIMIT_FSIZE, self.limit)


def _run_on_a_full_disk(save_dir: Path) -> dict:
    import resource
    import warnings

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, limit[1]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(0)
        run = lora_nb.train(mlp_with_lora(), PAIRS, save_dir=save_dir, save_every=1, steps=6,
                            **{**MLP, "callbacks": [_SpaceReturns(3, limit)]})
    return {"state": run.state, "step": run.step, "warnings": [str(w.message) for w in caught
                                                               if issubclass(w.category, LoraNBWarning)]}


def test_a_full_disk_skips_checkpoints_with_one_line_and_later_ones_are_written(tmp_path):
    code, report = forked(lambda: _run_on_a_full_disk(tmp_path))
    assert code == DONE, report.get("error")
    found = report["result"]
    assert found["state"] == "finished" and found["step"] == 6
    assert len(found["warnings"]) == 1 and "\n" not in found["warnings"][0], found["warnings"]
    assert "could not write the checkpoint at step 1" in found["warnings"][0]
    assert "File too large" in found["warnings"][0]
    # steps 1-3 met the full disk (the limit rises after step 3's checkpoint); every later one was written
    assert [step for step, _ in checkpoint.complete_checkpoints(tmp_path)] == [4, 5, 6]
    assert all(verify(folder).ok for _, folder in checkpoint.complete_checkpoints(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-000004", "checkpoint-000005", "checkpoint-000006"]


class _Free(lora_nb.Callback):
    """Removes the file that fills the disk at step ``step`` (space returns)."""

    def __init__(self, step: int, filler: Path) -> None:
        self.step, self.filler = step, filler

    def on_step_end(self, run, record) -> None:
        if record["step"] == self.step:
            os.remove(self.filler)


def test_a_real_full_disk_on_a_small_tmpfs_skips_checkpoints_until_space_returns(tmp_path):
    with small_tmpfs(tmp_path / "disk", "512k") as disk:
        if disk is None:
            pytest.skip("mounting a tmpfs is not allowed here (the file-size limit test covers a full disk)")
        filler = fill(disk)
        with pytest.warns(LoraNBWarning, match="could not write the checkpoint at step 1 .*No space left") as caught:
            run = _train(disk / "ckpt", 5, save_every=1, callbacks=[_Free(2, filler)])
        assert run.state == "finished" and run.step == 5
        assert len([w for w in caught if issubclass(w.category, LoraNBWarning)]) == 1
        assert [step for step, _ in checkpoint.complete_checkpoints(disk / "ckpt")] == [3, 4, 5]
        assert sorted(os.listdir(disk / "ckpt")) == ["checkpoint-000003", "checkpoint-000004", "checkpoint-000005"]


# ---------------------------------------------------------------- what a resume takes


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


def test_resume_from_a_save_dir_takes_the_newest_verified_and_says_what_it_skipped(tmp_path):
    _train(tmp_path, 8, save_every=2, callbacks=[StopAt(6)])
    _flip(tmp_path / "checkpoint-000006" / "state.safetensors")
    _flip(tmp_path / "checkpoint-000004" / WEIGHTS)
    with pytest.warns(LoraNBWarning, match="resuming from checkpoint-000002.*skipped: checkpoint-000004: "
                                           r"adapter/adapter_model.safetensors differs .*; checkpoint-000006: "
                                           "state.safetensors differs") as caught:
        run = _train(tmp_path / "next", 8, resume=tmp_path)
    assert run.history[0]["step"] == 1 and len(run.history) == 8  # steps 1-2 from the checkpoint, 3-8 trained
    assert "\n" not in str(caught[0].message)
    with pytest.raises(CheckpointError, match="checkpoint-000006 cannot be resumed from: state.safetensors differs"):
        _train(tmp_path / "next", 8, resume=tmp_path / "checkpoint-000006")
    _flip(tmp_path / "checkpoint-000002" / MANIFEST)
    with pytest.raises(CheckpointError, match="holds no complete checkpoint .*checkpoint-000002: "
                                              f"{MANIFEST} differs"):
        _train(tmp_path / "next", 8, resume=tmp_path)


def _without(folder: Path, prefix: str) -> None:
    """The checkpoint as a writer that left out these tensors would have written it (its manifest matching)."""
    from safetensors.torch import load_file, save_file

    from lora_nb.core.files import write_manifest

    tensors = load_file(str(folder / "state.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith(prefix)}, str(folder / "state.safetensors"))
    write_manifest(folder, "checkpoint")


@pytest.mark.parametrize("prefix, what", [("optimizer.", "the optimizer's state"), ("rng.", "the RNG states")])
def test_a_checkpoint_without_its_optimizer_or_rng_state_is_refused_unless_weights_only(tmp_path, prefix, what, ip,
                                                                                           capsys):
    full = _train(tmp_path / "full", 6)
    _train(tmp_path, 6, save_every=3, callbacks=[StopAt(3)])
    folder = tmp_path / "checkpoint-000003"
    _without(folder, prefix)
    with pytest.raises(CheckpointError, match=f"lacks {what}.*: .*resume_weights_only=True") as info:
        _train(tmp_path / "next", 6, resume=folder)
    assert "\n" not in str(info.value)
    with pytest.warns(LoraNBWarning, match="weights only: .*the losses will differ"):
        run = _train(tmp_path / "next", 6, resume=folder, resume_weights_only=True)
    assert run.state == "finished" and run.step == 6 and len(run.history) == 6
    assert run.history[3]["loss"] == full.history[3]["loss"]  # step 4 ran on the checkpoint's weights ...
    assert run.history[4]["loss"] != full.history[4]["loss"]  # ... its update by a fresh AdamW: not the same run
    with pytest.raises(OptionError, match="resume_weights_only goes with resume"):
        _train(tmp_path / "next", 6, resume_weights_only=True)
    ip.user_ns.update(model=mlp_with_lora(), pairs=PAIRS)
    line = f"train model --data pairs --steps 6 --batch-size 8 --lr 1e-2 --wait --resume {folder}"
    with pytest.raises(UsageError, match=f"lacks {what}.*--resume-weights-only"):
        ip.run_line_magic("lora", line)
    capsys.readouterr()
    ip.run_line_magic("lora", f"{line} --resume-weights-only")
    assert "note: resuming checkpoint-000003 from its weights only" in capsys.readouterr().err  # one line
    assert lora_nb.core.registry.find(ip.user_ns["model"]).run.step == 6


def test_keep_never_deletes_the_newest_verified_nor_the_best(tmp_path):
    _train(tmp_path, 6, save_every=1)
    _flip(tmp_path / "checkpoint-000006" / WEIGHTS)
    for leftover in (".checkpoint-000009.writing-abcd", ".checkpoint-000005.old-1234abcd",  # earlier releases'
                     f".checkpoint-000007.lora_nb-staging-{2**22 + 1}-abcdabcd"):  # a dead process's
        (tmp_path / leftover).mkdir()
    checkpoint.prune(tmp_path, 1, best_step=2)
    assert [step for step, _ in checkpoint.complete_checkpoints(tmp_path)] == [2, 5, 6]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-000002", "checkpoint-000005", "checkpoint-000006"]


def test_the_best_checkpoint_of_an_early_stopped_run_is_kept(tmp_path):
    evals = (PAIRS[0][:16], PAIRS[1][:16])
    run = _train(tmp_path, 10, save_every=1, keep=1, eval_data=evals, eval_every=1, lr=0.5)
    best = run.best["step"]
    kept = [step for step, _ in checkpoint.complete_checkpoints(tmp_path)]
    assert kept == sorted({best, run.step}), (kept, run.best)


# ---------------------------------------------------------------- files written by this release load in later ones

FIXTURES = Path(__file__).parent / "fixtures" / "release-0.1.0"


def _fixture_model():
    from helpers import tiny_mlp

    torch.manual_seed(1234)
    return tiny_mlp()


def write_fixtures(folder: Path = FIXTURES) -> None:
    """Regenerate the fixtures (only when their format changes on purpose): `python tests/test_trust_checkpoints.py`."""
    shutil.rmtree(folder, ignore_errors=True)
    model = _fixture_model()
    lora_nb.attach(model, r=2)
    run = lora_nb.train(model, PAIRS, save_dir=folder / "checkpoints", save_every=3, steps=6, seed=7,
                        **{**MLP, "batch_size": 20, "callbacks": [StopAt(3)]})
    lora_nb.save(model, folder / "adapter")
    with torch.no_grad():
        out = model(PAIRS[0][:4])
    model = _fixture_model()
    lora_nb.attach(model, r=2)
    full = lora_nb.train(model, PAIRS, steps=6, seed=7, **{**MLP, "batch_size": 20})
    (folder / "expected.json").write_text(json.dumps({"outputs": out.tolist(), "losses": [
        r["loss"] for r in full.history], "first_losses": [r["loss"] for r in run.history]}))


def test_the_adapter_and_checkpoint_written_by_this_release_still_load(tmp_path):
    expected = json.loads((FIXTURES / "expected.json").read_text())
    assert verify(FIXTURES / "adapter").ok and verify(FIXTURES / "checkpoints" / "checkpoint-000003").ok
    model = _fixture_model()
    lora_nb.load(model, FIXTURES / "adapter")
    with torch.no_grad():
        assert torch.allclose(model(PAIRS[0][:4]), torch.tensor(expected["outputs"]), atol=1e-5)
    model = _fixture_model()
    lora_nb.attach(model, r=2)
    shutil.copytree(FIXTURES / "checkpoints", tmp_path / "checkpoints")  # a resume never writes there, but a copy
    run = lora_nb.train(model, PAIRS, resume=tmp_path / "checkpoints", steps=6, seed=7, **{**MLP, "batch_size": 20})
    losses = [r["loss"] for r in run.history]
    assert losses[:3] == expected["first_losses"]
    assert max(abs(a - b) for a, b in zip(losses, expected["losses"])) < 1e-5


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    write_fixtures()
