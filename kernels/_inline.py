"""Numba's inliner without its two copies of a callee it has just built (first-run compile time).

Numba inlines an ``inline="always"`` function at each call site in two steps
(``InlineWorker.inline_function``): it runs the untyped pipeline on the
function (``run_untyped_passes``, which builds a new IR every time), then
``inline_ir`` deep-copies that IR twice, once to protect the caller's object
and once to return an untouched original, before it splices it in.  For a
call from ``inline_function`` neither copy protects anything: nobody else
holds the new IR, and the only caller of ``inline_function`` (the
InlineInlinables pass) drops the returned original.  ``copy.deepcopy`` of
Numba's IR is slow (every variable drags its scope along), and for the render
kernels, whose physics is one tree of inlined functions, these copies were
almost all of that pass: a cold 64x64 run (bench case B4) spent 7.5 s of CPU
in it and 1.5 s without the copies, with bit-identical kernels.  The same
change is proposed to numba-cuda (NVIDIA/numba-cuda pull request 689).

:func:`apply` replaces ``inline_function`` of a Numba module
(``numba.core.inline_closurecall``, or numba-cuda's copy of it) by the same
two calls, with ``copy.deepcopy`` inside the module returning its argument
while ``inline_ir`` runs for it; every other deep copy in that module,
including those of inlining done while the callee itself is built, is
Numba's own.  Nothing is changed where the module does not have the expected
shape (another Numba version), so the worst case is Numba's own speed.
"""
import copy
import threading
import types

_state = threading.local()

#: the argument names of ``InlineWorker.inline_function`` this replacement reproduces
_SIGNATURE = ("self", "caller_ir", "block", "i", "function", "arg_typs")


def _fresh():
    return getattr(_state, "fresh", False)


def _deepcopy(x, memo=None):
    """``copy.deepcopy`` for the inliner's module: the object itself while a new callee IR is spliced in."""
    if _fresh():
        return x
    return copy.deepcopy(x, memo)


def _inline_function(self, caller_ir, block, i, function, arg_typs=None):
    """``InlineWorker.inline_function`` whose new callee IR is spliced in without copies."""
    callee_ir = self.run_untyped_passes(function)
    previous = _fresh()
    _state.fresh = True
    try:
        return self.inline_ir(caller_ir, block, i, callee_ir, function.__code__.co_freevars, arg_typs=arg_typs)
    finally:
        _state.fresh = previous


_inline_function.nanobrag = True


def applicable(module) -> bool:
    """Whether ``module`` has the inliner this replacement was written for."""
    worker = getattr(module, "InlineWorker", None)
    original = getattr(worker, "inline_function", None)
    if getattr(original, "nanobrag", False):
        return True             # applied already
    inline_ir = getattr(worker, "inline_ir", None)
    if (original is None or inline_ir is None or not hasattr(worker, "run_untyped_passes")
            or getattr(module, "copy", None) is not copy):
        return False
    code = original.__code__
    nested = [c.co_name for c in inline_ir.__code__.co_consts if isinstance(c, types.CodeType)]
    return (code.co_varnames[:code.co_argcount] == _SIGNATURE
            and {"run_untyped_passes", "inline_ir"} <= set(code.co_names) and "copy_ir" in nested)


def apply(module) -> bool:
    """Install the copy-free ``inline_function`` in ``module``; False (nothing changed) where not applicable."""
    try:
        if not applicable(module):
            return False
        if not getattr(module.InlineWorker.inline_function, "nanobrag", False):
            shim = types.ModuleType("copy")
            shim.__dict__.update(copy.__dict__)
            shim.deepcopy = _deepcopy
            module.copy = shim
            module.InlineWorker.inline_function = _inline_function
        return True
    except Exception:  # pragma: no cover - an unexpected Numba: keep its own inliner
        return False


def apply_cpu() -> bool:
    """:func:`apply` to Numba's own inliner (the CPU kernels)."""
    try:
        from numba.core import inline_closurecall
    except Exception:  # pragma: no cover
        return False
    return apply(inline_closurecall)


def apply_cuda() -> bool:
    """:func:`apply` to numba-cuda's inliner (the CUDA kernels), where numba-cuda has its own."""
    try:
        from numba.cuda.core import inline_closurecall
    except Exception:
        return False
    return apply(inline_closurecall)
