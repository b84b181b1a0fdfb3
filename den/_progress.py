"""Progress bars for long training stages (tqdm), fed by the C core's poll hook."""

from __future__ import annotations


class StageBar:
    """A progress bar over the minibatches of one training stage.

    Use as the ``callback`` of ``Net.train``: the core calls it a few times a second with
    (epoch, epochs, step, steps, loss) while the GIL is otherwise released.
    """

    def __init__(self, description: str, enabled: bool):
        self._bar = None
        self._description = description
        self._enabled = enabled

    def __call__(self, epoch, epochs, step, steps, loss):
        if not self._enabled:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=epochs * steps, desc=self._description, unit="batch", leave=False)
        self._bar.n = min(epoch * steps + step, self._bar.total)
        if loss == loss:  # not NaN: a finished epoch reported its mean loss
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self._bar.refresh()

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
