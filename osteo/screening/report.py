"""What a screening did: counts by status (ScreenCounts), what was pushed (PushCounts), and the whole run
(ScreenReport) that `osteo screen --json`, its summary and the Prefect artifact are built from."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

EXCLUDED = "excluded: "


@dataclass(frozen=True)
class ScreenCounts:
    """Images screened in one batch or run, by status; `flagged`: screened at or above the threshold."""

    images: int = 0
    screened: int = 0
    not_located: int = 0
    excluded: tuple[tuple[str, int], ...] = ()  # (reason, images), sorted by reason
    flagged: int = 0

    @classmethod
    def of(cls, statuses: list[str], flagged: int = 0) -> ScreenCounts:
        c = Counter(statuses)
        reasons = Counter({s.removeprefix(EXCLUDED): n for s, n in c.items() if s.startswith(EXCLUDED)})
        return cls(images=len(statuses), screened=c["screened"], not_located=c["not_located"],
                   excluded=tuple(sorted(reasons.items())), flagged=flagged)

    def __add__(self, other: ScreenCounts) -> ScreenCounts:
        reasons = Counter(dict(self.excluded)) + Counter(dict(other.excluded))
        return ScreenCounts(self.images + other.images, self.screened + other.screened,
                            self.not_located + other.not_located, tuple(sorted(reasons.items())),
                            self.flagged + other.flagged)

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "screened": self.screened, "not_located": self.not_located,
                "excluded": dict(self.excluded), "flagged": self.flagged}


@dataclass(frozen=True)
class PushCounts:
    """The SRs and secondary captures sent back to the PACS this run (objects, not results)."""

    mode: str = "none"  # positive | all | none (OSTEO_SCREEN_PUSH)
    target: str | None = None  # where: the DICOMweb URL or AET@host:port; None: no PACS configured
    results: int = 0  # results pushed (each an SR, and an SC when it has a box)
    sr: int = 0
    sc: int = 0
    failed: int = 0
    errors: tuple[str, ...] = ()  # the PACS's answers, first few (no patient data)

    def __add__(self, other: PushCounts) -> PushCounts:
        return PushCounts(self.mode, self.target or other.target, self.results + other.results, self.sr + other.sr,
                          self.sc + other.sc, self.failed + other.failed, (self.errors + other.errors)[:5])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "errors": list(self.errors)}


@dataclass(frozen=True)
class ScreenReport:
    """One `osteo screen`: which version screened, what it screened this run, what it had already screened,
    what was pushed; `champion` None: nothing registered, nothing done."""

    champion: dict[str, Any] | None
    this_run: ScreenCounts = field(default_factory=ScreenCounts)
    already_screened: int = 0
    rescreen: bool = False
    pushed: PushCounts = field(default_factory=PushCounts)

    def to_dict(self) -> dict[str, Any]:
        return {"champion": self.champion, "rescreen": self.rescreen, "this_run": self.this_run.to_dict(),
                "already_screened": self.already_screened, "pushed": self.pushed.to_dict()}

    def summary(self) -> str:
        if self.champion is None:
            return "screening: no champion classifier registered yet (osteo train): nothing screened"
        t = self.this_run
        excluded = ", ".join(f"{r} {n}" for r, n in t.excluded) or "none"
        p = self.pushed
        where = p.target or "no PACS configured"
        return "\n".join([
            f"screened by     {self.champion['model']} (localiser {self.champion['localiser'] or 'none'})",
            f"this run        {t.images} images: screened {t.screened} (flagged {t.flagged}), not located "
            f"{t.not_located}, excluded {excluded}",
            f"already done    {self.already_screened} images screened by this version before",
            f"pushed ({p.mode})  {p.results} results ({p.sr} SR, {p.sc} SC) to {where}"
            + (f"; {p.failed} failed" if p.failed else "") + (f": {'; '.join(p.errors)}" if p.errors else "")])

    def table(self) -> list[dict[str, Any]]:
        """Rows for the Prefect artifact."""
        t = self.this_run
        rows = [{"what": "screened", "count": t.screened}, {"what": "flagged", "count": t.flagged},
                {"what": "not located", "count": t.not_located}]
        rows += [{"what": f"excluded: {r}", "count": n} for r, n in t.excluded]
        rows += [{"what": "already screened", "count": self.already_screened},
                 {"what": "SR pushed", "count": self.pushed.sr}, {"what": "SC pushed", "count": self.pushed.sc},
                 {"what": "push failed", "count": self.pushed.failed}]
        return rows
