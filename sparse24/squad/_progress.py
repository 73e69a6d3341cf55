"""Progress bars when tqdm is installed (it comes with the [bert] extra), plain loops otherwise.

``python -m sparse24`` builds every subcommand's parser, which imports the SQuAD modules: a bare
install (torch, triton, numpy) must get that far without tqdm.
"""

from __future__ import annotations

try:
    from tqdm.auto import tqdm
except ImportError:  # no progress bars

    def tqdm(iterable=None, *args, **kwargs):  # noqa: ARG001  (tqdm's signature, ignored)
        return iterable


__all__ = ["tqdm"]
