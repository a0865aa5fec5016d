"""A client's own requirements of the sessions it takes part in (docs/SERVICE.md,
"Client policy").

The server cannot choose a SecAgg session's parameters for a client: every client holds
the session's configuration and refuses a server whose ``SessionStart`` carries another
digest, before it does any work (docs/PROTOCOL.md, "Configuration"). So the
configuration a client holds is the only one the server can ask it to run, and the
policy checks that configuration when the client is created, before it connects. What
the server alone decides while a session runs (who contributed to the result it
returns) is checked when it arrives. The policy is the hospital's own, set apart from
the session options it was told to use: a threshold of 2 handed out with the server's
instructions is refused by a client whose policy says 4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from securefl.errors import ConfigError, ProtocolAbort
from securefl.secagg.config import GraphKind, SecAggConfig

__all__ = ["ClientPolicy", "PolicyError"]


class PolicyError(ConfigError):
    """A session's configuration is below this client's policy.

    ``parameter`` names the session parameter; ``session`` is the session's value and
    ``required`` what the policy asks for (both as text).
    """

    def __init__(self, parameter: str, session: str, required: str) -> None:
        super().__init__(
            f"{parameter}: the session has {session}, this client's policy requires {required}"
        )
        self.parameter = parameter
        self.session = session
        self.required = required


@dataclass(frozen=True)
class ClientPolicy:
    """What a client requires of every session, whatever the server asks.

    The defaults require nothing beyond the library's own rules (``SecAggConfig``
    refuses t < 2 and the thresholds its corruption rate forbids; a CKKS result needs
    two contributors).

    Parameters
    ----------
    min_threshold:
        SecAgg: the fewest shares t that rebuild a client's secrets. A coalition of the
        server and t - 1 of a client's neighbours learns nothing of its update.
    min_corruption_rate:
        SecAgg: the fraction of clients that may collude with the server which the
        session must tolerate (its ``corruption_rate``, which fixes the smallest t the
        configuration may use; docs/PROTOCOL.md). CKKS tolerates none (every client
        holds the secret key), so a CKKS client with a positive rate is refused.
    min_security_bits:
        SecAgg+ (the Harary graph) with a positive ``min_corruption_rate``: the session's
        ``security_bits`` sigma, the tail bound on corrupt neighbours behind its t
        (a low sigma lowers c, and with it the smallest allowed t).
    require_authenticated:
        SecAgg: the authenticated mode (signed keys and survivor sets, a ConsistencyCheck
        round), the only one secure against a server that lies about dropouts. CKKS has
        no such mode: a CKKS client that requires it is refused.
    max_dimension:
        The largest update the client sends and result it accepts (SecAgg: the
        configuration's d; CKKS: the update's length).
    min_survivors:
        SecAgg: the fewest masked inputs a sum may hold. The configuration must carry
        ``min_survivors`` at least this large (with differential privacy, the plan's
        n_min), so that the client reveals no share for a smaller survivor set where it
        sees the global set (authenticated mode, or the complete graph); a result of
        fewer contributors is refused too.
    min_contributors:
        Every protocol: a result of fewer contributors is refused (CKKS: before it is
        decrypted). At least 2: a "sum" of one client is that client's update.

    Raises
    ------
    ConfigError
        If a field is out of range.
    """

    min_threshold: int = 2
    min_corruption_rate: float = 0.0
    min_security_bits: int = 40
    require_authenticated: bool = False
    max_dimension: int | None = None
    min_survivors: int | None = None
    min_contributors: int = 2

    def __post_init__(self) -> None:
        for name, low in (("min_threshold", 2), ("min_security_bits", 0), ("min_contributors", 2)):
            value = getattr(self, name)
            # bool is an int: True would silently mean 1.
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        for name in ("max_dimension", "min_survivors"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"{name} must be a positive integer or None, got {value!r}")
        rate = self.min_corruption_rate
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float))
            or not (math.isfinite(rate) and 0 <= rate < 1)
        ):
            raise ConfigError(f"min_corruption_rate must be in [0, 1), got {rate!r}")
        if not isinstance(self.require_authenticated, bool):
            raise ConfigError("require_authenticated must be a bool")

    def check_secagg(self, config: SecAggConfig) -> None:
        """Check a SecAgg session's configuration against the policy.

        Raises
        ------
        PolicyError
            Naming the first parameter below the policy, with the session's value and
            the policy's.
        """
        t = config.threshold
        if t < self.min_threshold:
            raise PolicyError("threshold", f"t={t}", f"t >= {self.min_threshold} (min_threshold)")
        if self.require_authenticated and not config.authenticated:
            raise PolicyError(
                "authenticated",
                "authenticated=False",
                "the authenticated mode (require_authenticated)",
            )
        rate = config.corruption_rate
        if rate < self.min_corruption_rate:
            raise PolicyError(
                "corruption_rate",
                f"corruption_rate={rate:g} (t={t} tolerates "
                f"c={config.tolerated_corrupt_neighbours} corrupt neighbours)",
                f"corruption_rate >= {self.min_corruption_rate:g} (min_corruption_rate)",
            )
        harary = config.graph is GraphKind.HARARY
        if harary and self.min_corruption_rate > 0:
            sigma = config.security_bits
            if sigma < self.min_security_bits:
                raise PolicyError(
                    "security_bits",
                    f"security_bits={sigma}",
                    f"security_bits >= {self.min_security_bits} (min_security_bits)",
                )
        self.check_dimension(config.dimension)
        if self.min_survivors is not None:
            have = config.min_survivors
            if have is None or have < self.min_survivors:
                shown = "no min_survivors" if have is None else f"min_survivors={have}"
                raise PolicyError("min_survivors", shown, f"min_survivors >= {self.min_survivors}")

    def check_ckks(self) -> None:
        """Check that a CKKS session can meet the policy at all.

        Raises
        ------
        PolicyError
            If the policy requires the authenticated mode or tolerance of corrupt
            clients, which CKKS (one secret key shared by every client) cannot give.
        """
        if self.require_authenticated:
            raise PolicyError(
                "authenticated",
                "CKKS, which has no authenticated mode",
                "the authenticated mode (require_authenticated)",
            )
        if self.min_corruption_rate > 0:
            raise PolicyError(
                "corruption_rate",
                "CKKS, which tolerates no client colluding with the server (every client "
                "holds the secret key)",
                f"corruption_rate >= {self.min_corruption_rate:g} (min_corruption_rate)",
            )

    def check_dimension(self, dimension: int) -> None:
        """Raises :class:`PolicyError` if ``dimension`` exceeds ``max_dimension``."""
        if self.max_dimension is not None and dimension > self.max_dimension:
            raise PolicyError(
                "dimension", f"d={dimension}", f"d <= {self.max_dimension} (max_dimension)"
            )

    def check_contributors(self, contributors: Sequence[int], session: int) -> None:
        """Check the contributor count of a result the server sent.

        Raises
        ------
        ProtocolAbort
            If the result has fewer contributors than ``min_contributors`` or
            ``min_survivors``; the reason names the parameter and both values.
        """
        m = len(contributors)
        wanted = [("min_contributors", self.min_contributors)]
        if self.min_survivors is not None:
            wanted.append(("min_survivors", self.min_survivors))
        for name, least in wanted:
            if m < least:
                raise ProtocolAbort(
                    f"refused the result of session {session}: {name}: the server's result "
                    f"has {m} contributor(s), this client's policy requires at least {least}"
                )
