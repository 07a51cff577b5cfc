from __future__ import annotations

from torch import Tensor, nn

from genmodels import gan
from genmodels.ops import _checks


class GradientPenalty(nn.Module):
    """A critic's gradient penalty as a module: ``loss = loss + gp(D, real, fake)``.

    Holds the configuration of `genmodels.gan.gradient_penalty` and, for lazy
    regularization (``every=k``), the call counter: the penalty is computed on every k-th
    call (the first call included) and multiplied by k, and is a zero tensor otherwise, as
    in StyleGAN2. The counter is saved in the state dict so a resumed run keeps its phase.
    """

    def __init__(
        self,
        kind: str = "wgan-gp",
        weight: float = 10.0,
        target: float = 1.0,
        one_sided: bool = False,
        method: str = "autograd",
        every: int = 1,
        fd_step: float = gan.DEFAULT_FD_STEP,
        dragan_noise: str = "normal",
        dragan_c: float = 10.0,
        backend: str = "auto",
    ):
        super().__init__()
        self.kind = gan._check_choice(kind, gan.KINDS, "kind")
        self.method = gan._check_choice(method, gan.METHODS, "method")
        self.dragan_noise = gan._check_choice(dragan_noise, gan.DRAGAN_NOISE, "dragan_noise")
        self.weight = _checks.check_real(weight, "weight")
        self.target = _checks.check_real(target, "target")
        self.one_sided = _checks.check_bool(one_sided, "one_sided")
        self.every = _checks.check_positive_int(every, "every")
        self.fd_step = gan._check_positive_real(fd_step, "fd_step")
        self.dragan_c = gan._check_positive_real(dragan_c, "dragan_c")
        self.backend = backend
        self.calls = 0

    def forward(
        self,
        D,
        real: Tensor,
        fake: Tensor | None = None,
        *critic_args,
        alpha: Tensor | None = None,
        noise: Tensor | None = None,
        scaler=None,
        generator=None,
        **critic_kwargs,
    ) -> Tensor:
        iteration = self.calls
        self.calls += 1
        return gan.gradient_penalty(
            D,
            real,
            fake,
            kind=self.kind,
            weight=self.weight,
            target=self.target,
            alpha=alpha,
            noise=noise,
            method=self.method,
            one_sided=self.one_sided,
            critic_args=critic_args,
            critic_kwargs=critic_kwargs,
            dragan_noise=self.dragan_noise,
            dragan_c=self.dragan_c,
            fd_step=self.fd_step,
            every=self.every,
            iteration=iteration,
            scaler=scaler,
            generator=generator,
            backend=self.backend,
        )

    def get_extra_state(self):
        return {"calls": self.calls}

    def set_extra_state(self, state):
        self.calls = int(state["calls"])

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, weight={self.weight}, target={self.target}, "
            f"method={self.method!r}, every={self.every}"
        )
