"""A Ctrl-C at any instant of attach, load, combine, merge or detach leaves the model fully done or untouched.

Each operation is run once under ``sys.settrace`` to count its line events (every Python line it executes: lora_nb,
peft, torch, the standard library), then once per event N on a fresh, identical model, with an interrupt at event N:

- ``signal``: a real SIGINT (``signal.raise_signal``) delivered at that line, as a Ctrl-C in a kernel is: through
  whatever handler is installed at that instant;
- ``raise``: a ``KeyboardInterrupt`` raised at that line regardless of any handler (the harder case: it also
  stands for any exception half-way).

Afterwards the model must equal either the uninterrupted result (session, adapters, active / on / merged state,
records, every parameter bit-identical with its ``requires_grad``) or the model before the operation, the SIGINT
handler must be the one from before, and attach / detach must work on it again.
"""

from __future__ import annotations

import dis
import functools
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from helpers import make_b_nonzero, tiny_mlp

import lora_nb
from lora_nb.core import registry
from lora_nb.core.interrupts import deferred_interrupts, deferring

EVERY = os.environ.get("LORA_NB_EVERY_EVENT", "")  # "1": every event in scope; "all": every event of all code
POINTS = 20, 40  # otherwise: this many events spread over all, and this many over those in the operations' own code
OWN = tuple(f"lora_nb/core/{name}.py" for name in ("adapters/attach", "adapters/inject", "adapters/io",
                                                   "adapters/combine", "adapters/merge", "adapters/atomic",
                                                   "registry", "interrupts"))
SCOPE = ("/lora_nb/", "/peft/")  # the operation's own code and the library that injects (torch, stdlib: with "all")
HOLDER = ("lora_nb/core/interrupts.py", "/signal.py")  # not interrupted in `raise` mode (see Interrupter)
FOLDED = "<frozen importlib._bootstrap>"  # CPython runs import-lock cleanup as weakref callbacks: an exception
# raised there is printed as "ignored" and lost, for any Ctrl-C at that instant; nothing lora_nb can hold back


@dataclass
class Case:
    """An operation: ``setup()`` builds the model it starts from, ``op(model)`` is the operation itself."""

    name: str
    setup: Callable[[], torch.nn.Module]
    op: Callable[[torch.nn.Module], object]


def _fresh() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_mlp()


def _with(*names: str, merged: bool = False) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        model = _fresh()
        for i, name in enumerate(names):
            lora_nb.attach(model, r=4, targets="0,2", name=name)
            make_b_nonzero(model, name, scale=0.3 + 0.1 * i)
        if merged:
            lora_nb.merge(model, names[0])
        return model

    return build


def _saved(tmp: str) -> str:
    model = _with("default")()
    return str(lora_nb.save(model, f"{tmp}/saved"))


def cases(tmp: str) -> list[Case]:
    saved = _saved(tmp)
    return [
        Case("attach", _fresh, lambda m: lora_nb.attach(m, r=4, targets="0,2")),
        Case("attach beside a merged one", _with("default", merged=True),
             lambda m: lora_nb.attach(m, name="second", r=2, targets="0")),
        Case("attach --replace", _with("default"), lambda m: lora_nb.attach(m, r=2, targets="0", replace=True)),
        Case("load", _fresh, lambda m: lora_nb.load(m, saved)),
        Case("load beside a merged one", _with("a", merged=True), lambda m: lora_nb.load(m, saved, name="loaded")),
        Case("combine", _with("a", "b", merged=True),
             lambda m: lora_nb.combine(m, ["a", "b"], [0.5, 0.5], name="mix", combination_type="cat")),
        Case("merge", _with("a", "b"), lambda m: lora_nb.merge(m, "b")),
        Case("detach", _with("a", "b", merged=True), lambda m: lora_nb.detach(m)),
    ]


def state(model: torch.nn.Module) -> dict:
    """Everything an operation may change, comparable with ``==`` (tensors as bytes)."""
    session = registry.find(model)
    layers = [m for m in model.modules() if hasattr(m, "merged_adapters") and hasattr(m, "disable_adapters")]
    params = {n: (p.detach().numpy().tobytes(), p.requires_grad) for n, p in model.named_parameters()}
    if session is None:
        return {"session": False, "params": params, "layers": len(layers)}
    return {"session": True, "params": params, "adapters": session.adapters, "active": session.active,
            "merged": [tuple(m.merged_adapters) for m in layers], "off": [m.disable_adapters for m in layers],
            "records": {k: repr(v) for k, v in session.records.items()}, "backup": session.merge_backup is not None}


@functools.cache
def with_exits(code) -> frozenset[int]:
    """Offsets where a ``with`` block's normal exit begins (``LOAD_CONST None`` ×3, then the ``__exit__`` call).

    CPython reports a line event there, before ``__exit__`` runs and outside the block's exception handler, but
    neither a signal (handled at calls and backward jumps) nor any exception can arise at a ``LOAD_CONST``: these
    are not instants of the operation, and an interrupt forced there would skip ``__exit__`` (a lock left held,
    grad mode left off) as nothing real can."""
    ins = list(dis.get_instructions(code))
    return frozenset(ins[k].offset for k in range(len(ins) - 3)
                     if all(i.opname == "LOAD_CONST" and i.argval is None for i in ins[k:k + 3])
                     and ins[k + 3].opname in ("PRECALL", "CALL") and ins[k + 3].arg == 2)


class Interrupter:
    """A trace function that counts line events and interrupts at event ``at`` (``mode``: signal or raise)."""

    def __init__(self, at: int | None = None, mode: str = "signal") -> None:
        self.at, self.mode, self.count, self.fired, self.where = at, mode, 0, False, ""
        self.own: list[int] = []  # the events in OWN code

    def __call__(self, frame, event: str, arg: object):
        if event == "call" and EVERY != "all" and not any(s in frame.f_code.co_filename for s in SCOPE):
            return None  # no line events from this frame (calls from it are still seen)
        if event == "call" and self.mode == "raise" and frame.f_code.co_filename.endswith(HOLDER):
            return None  # the handler that holds Ctrl-C back is being put in or taken out: no signal can raise here
        if event == "line" and not self.fired and frame.f_lasti not in with_exits(frame.f_code):
            self.count += 1
            if frame.f_code.co_filename.endswith(OWN):
                self.own.append(self.count)
            if self.count == self.at:
                self.fired, self.where = True, f"{frame.f_code.co_filename}:{frame.f_lineno}"
                if self.mode == "signal":
                    signal.raise_signal(signal.SIGINT)  # its handler runs here, before the line
                else:
                    raise KeyboardInterrupt
        return self

    def run(self, op: Callable[[], object]) -> bool:
        """Run ``op`` traced; True when a KeyboardInterrupt came out of it."""
        sys.settrace(self)
        try:
            op()
        except KeyboardInterrupt:
            return True
        finally:
            sys.settrace(None)
        return False


def check_usable(model: torch.nn.Module) -> None:
    """The kernel's way back: status / detach / attach work on the model as it was left."""
    if registry.find(model) is not None:
        lora_nb.status(model)
        lora_nb.detach(model)
    lora_nb.attach(model, r=2, targets="0")
    lora_nb.status(model)
    lora_nb.detach(model)


def sweep(case: Case, mode: str) -> tuple[int, int, list[str]]:
    """Interrupt ``case`` at each of its events; returns (events, tried, failures)."""
    before_model = case.setup()
    before = state(before_model)
    done_model = case.setup()
    torch.manual_seed(1)
    counter = Interrupter()
    assert not counter.run(lambda: case.op(done_model))
    done, events = state(done_model), counter.count
    spread, own = range(1, events + 1, -(-events // POINTS[0])), counter.own[::-(-len(counter.own) // POINTS[1])]
    points = range(1, events + 1) if EVERY else sorted({*spread, *own, events})
    failures = []
    for n in points:
        model = case.setup()
        torch.manual_seed(1)
        handler = signal.getsignal(signal.SIGINT)
        interrupter = Interrupter(n, mode)
        interrupted = interrupter.run(lambda model=model: case.op(model))
        assert not registry._lock.locked(), f"{case.name} ({mode}) event {n} at {interrupter.where}: registry lock held"
        after = state(model)
        problems = []
        if interrupter.fired and not interrupted and not interrupter.where.startswith(FOLDED):
            problems.append("the interrupt was lost")
        if not torch.is_grad_enabled():
            problems.append("torch's grad mode was left off")
            torch.set_grad_enabled(True)
        if signal.getsignal(signal.SIGINT) is not handler or deferring():
            problems.append("the SIGINT handler was left changed")
        if after != done and after != before:
            problems.append("half done: " + ", ".join(k for k in {*after, *before}
                                                     if after.get(k) != done.get(k) and after.get(k) != before.get(k)))
        try:
            check_usable(model)
        except Exception as exc:
            problems.append(f"not usable afterwards: {type(exc).__name__}: {exc}")
        if problems:
            failures.append(f"{case.name} ({mode}) event {n}/{events} at {interrupter.where}: " + "; ".join(problems))
    return events, len(points), failures


@pytest.fixture(autouse=True)
def _ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt, as in a kernel (a process started in the background begins with it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def all_cases(tmp_path_factory) -> list[Case]:
    return cases(str(tmp_path_factory.mktemp("aon")))


@pytest.mark.parametrize("mode", ["signal", "raise"])
@pytest.mark.parametrize("index", range(8), ids=["attach", "attach-beside-merged", "attach-replace", "load",
                                                  "load-beside-merged", "combine", "merge", "detach"])
def test_interrupt_at_every_event_leaves_done_or_untouched(all_cases, index, mode, capsys):
    torch.set_num_threads(1)
    case = all_cases[index]
    events, tried, failures = sweep(case, mode)
    with capsys.disabled():
        print(f"\n{case.name} ({mode}): {events} events, {tried} tried, {tried - len(failures)} survived")
    assert not failures, f"{len(failures)} of {tried} failed, e.g.\n" + "\n".join(failures[:5])


def test_a_deferred_ctrl_c_arrives_once_the_section_ends():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            signal.raise_signal(signal.SIGINT)
            reached.append("after the signal")  # the section went on
    assert reached == ["after the signal"] and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with deferred_interrupts():  # no signal: nothing raised
        pass


def test_ctrl_c_between_peft_and_registration_leaves_no_stray_layers(monkeypatch):
    """The reported case: peft has injected, the session is not registered yet, and Ctrl-C arrives."""
    model = _fresh()
    original = registry.register

    def interrupted(session):
        signal.raise_signal(signal.SIGINT)
        original(session)

    monkeypatch.setattr(registry, "register", interrupted)
    with pytest.raises(KeyboardInterrupt):
        lora_nb.attach(model, r=4)
    monkeypatch.undo()
    assert registry.find(model) is not None and lora_nb.status(model).adapters[0].name == "default"  # fully done
    lora_nb.detach(model)
    lora_nb.attach(model, r=4)
