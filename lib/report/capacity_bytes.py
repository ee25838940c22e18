"""Capacity in bytes and effective eviction time of one analysis: the records and the stats-text sections.

The numbers come from `lib/cache/kv_bytes.py`, `lib/cache/tiers.py` and `lib/cache/eviction_time.py`
(docs/cache-models.md); this module only converts and lays them out.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from lib.cache.eviction_time import NO_REFRESH_MAX_CELLS, EvictionRow, EvictionTime
from lib.cache.kv_bytes import PRESETS, tokens_to_gib
from lib.report.analysis import Analysis
from lib.report.dashboard import (
    fit_range, format_gib, format_pct, format_points, format_tokens, format_ttl, shown_eviction_rows,
)
from lib.report.model import KvCapacity, PresetCapacity, SizeInBytes

Table = Callable[[Sequence[Sequence[str]]], list[str]]  # stats_text's column layout


def kv_capacity(analysis: Analysis) -> Optional[KvCapacity]:
    """Every capacity figure of the analysis in tokens and GiB of its KV model; None without a curve."""
    curve = analysis.capacity
    if curve is None:
        return None
    model = analysis.options.kv_model
    per_token = model.bytes_per_token

    def sized(label: str, tokens: Optional[int]) -> SizeInBytes:
        return SizeInBytes(label, tokens, tokens_to_gib(tokens, per_token))

    presets = tuple(PresetCapacity(name, preset.bytes_per_token,
                                   tuple(tokens_to_gib(t.lru_capacity_tokens, preset.bytes_per_token) for t in curve.targets))
                    for name, preset in PRESETS.items())
    return KvCapacity(
        model=model.name, geometry=model.describe(), source=model.source, bytes_per_token=per_token,
        working_set=tuple(sized(row.ttl_label, row.peak_working_set_tokens) for row in analysis.ttl_rows),
        lru=tuple(sized(share_label(t.share), t.lru_capacity_tokens) for t in curve.targets),
        opt=tuple(sized(share_label(t.share), t.opt_capacity_tokens) for t in curve.targets),
        presets=presets, tiers=analysis.tiers, infinite_hit_rate=curve.infinite_hit_rate,
    )


def share_label(share: float) -> str:
    """0.95 → '95 %'."""
    return f"{share * 100:g} %"


def _size(size: SizeInBytes) -> str:
    return "not reached" if size.tokens is None else f"{format_tokens(size.tokens)} tok = {format_gib(size.gib)}"


def capacity_bytes_lines(capacity: Optional[KvCapacity], table: Table) -> list[str]:
    """The stats section 'Capacity in bytes'."""
    if capacity is None:
        return ["no requests"]
    lines = [f"KV model {capacity.geometry}" + (f" ({capacity.source})" if capacity.source else ""),
             f"Infinite-cache hit rate {format_pct(capacity.infinite_hit_rate)}. 1 GiB = 2^30 bytes."]
    lines += table([("target (of infinite)", "LRU", "OPT")] + [
        (lru.label, _size(lru), _size(opt)) for lru, opt in zip(capacity.lru, capacity.opt)])
    lines.append("")
    lines += table([("peak working set at TTL", "tokens", "GiB")] + [
        (size.label, format_tokens(size.tokens), format_gib(size.gib)) for size in capacity.working_set])
    lines.append("")
    shares = [size.label for size in capacity.lru]
    lines += table([("preset", "bytes/token", *[f"LRU {label}" for label in shares])] + [
        (preset.model, format_tokens(preset.bytes_per_token), *[format_gib(gib) for gib in preset.lru_gib])
        for preset in capacity.presets])
    if capacity.tiers:
        lines.append("")
        lines += table([("tier (LRU, demote on evict)", "size", "holds tokens", "hit rate")] + [
            (tier.name, format_gib(tier.size_gib), format_tokens(tier.capacity_tokens), format_pct(tier.hit_rate))
            for tier in capacity.tiers] + [
            ("miss (prefilled)", "", "", format_pct(1 - sum(tier.hit_rate for tier in capacity.tiers)))])
        lines.append(f"Per-tier rates add up to the LRU hit rate of all tiers together (at most "
                     f"{format_pct(capacity.infinite_hit_rate)}).")
    return lines


def eviction_lines(eviction: Optional[EvictionTime], table: Table) -> list[str]:
    """The stats section 'Effective eviction time'."""
    if eviction is None:
        return ["no request has billed usage"]
    lines = table([("family", "requests", "billed hit", "TTL (refresh)", "fits", "sim hit", "error", "mismatch",
                    "TTL (no refresh)", "fits", "error")] + [
        (fit.family, str(fit.requests), format_pct(fit.billed_hit_rate), format_ttl(fit.refresh.ttl_s),
         fit_range(fit.refresh), format_pct(fit.refresh.simulated_hit_rate), format_points(fit.refresh.error),
         format_pct(fit.refresh.mismatch),
         *((format_ttl(fit.no_refresh.ttl_s), fit_range(fit.no_refresh), format_points(fit.no_refresh.error))
           if fit.no_refresh else ("n/a", "", "")))
        for fit in eviction.fits])
    if any(fit.no_refresh is None for fit in eviction.fits):
        lines.append(f"The no-refresh model was skipped: the capture needs more than {NO_REFRESH_MAX_CELLS:,} "
                     "block × TTL updates.")
    lines.append("TTL = the grid TTL whose per-request cache reads best match the billed ones (shortest on ties); "
                 "fits = every TTL as good; error = simulated − billed hit rate; mismatch = Σ|sim − billed read| "
                 "/ prompt tokens.")
    lines.append("")
    shown = shown_eviction_rows(eviction)
    lines += table([("TTL", "hit (refresh)", "hit (no refresh)", "idle KV ratio", "prefill ampl.",
                     "prefill ampl. (no refresh)")] + [_row_cells(row) for row in shown])
    lines.append("Hit rates over the billed requests, scaled to the API's prompt sizes; idle KV ratio = cached-but-unused "
                 "/ in-use block-seconds; prefill amplification = prefilled / unique tokens. Rows: the standard TTLs and the "
                 "fitted ones; every grid TTL is in --json.")
    return lines


def _row_cells(row: EvictionRow) -> Sequence[str]:
    return (format_ttl(row.ttl_s), format_pct(row.refresh_hit_rate),
            "n/a" if row.no_refresh_hit_rate is None else format_pct(row.no_refresh_hit_rate),
            f"{row.idle_kv_ratio:.2f}", f"{row.prefill_amplification:.2f}",
            "n/a" if row.no_refresh_prefill_amplification is None else f"{row.no_refresh_prefill_amplification:.2f}")
