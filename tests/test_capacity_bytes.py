"""Capacity in bytes: KV bytes per token by hand, the tier split by hand, the example's GiB figures, the CLI flags."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from complete_cache_visualizer import main
from lib.cache.capacity_model import lru_profile
from lib.cache.kv_bytes import GIB, PRESETS, gib_to_blocks, parse_geometry, resolve_model, tokens_to_gib
from lib.cache.replay import CacheEvent
from lib.cache.tiers import parse_tiers, tier_split

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name, expected", [
    ("llama-3.1-8b", 2 * 32 * 8 * 128 * 2),     # 131,072 B = 128 KiB per token
    ("llama-3.1-70b", 2 * 80 * 8 * 128 * 2),    # 327,680 B
    ("qwen2.5-7b", 2 * 28 * 4 * 128 * 2),       # 57,344 B
    ("qwen3-32b", 2 * 64 * 8 * 128 * 2),        # 262,144 B
    ("deepseek-v3", 61 * (512 + 64) * 2),       # MLA: one latent + rope key per layer, 70,272 B
    ("gpt-oss-120b", 2 * 18 * 8 * 64 * 2),      # the 18 full-attention layers only, 36,864 B
])
def test_preset_bytes_per_token_by_hand(name: str, expected: int) -> None:
    assert PRESETS[name].bytes_per_token == expected


def test_custom_geometry_bytes_and_fp8() -> None:
    assert parse_geometry("layers=32,kv_heads=8,head_dim=128").bytes_per_token == 131_072
    assert parse_geometry("layers=32, kv_heads=8, head_dim=128, dtype_bytes=1").bytes_per_token == 65_536
    assert parse_geometry("layers=61,mla_dim=576").bytes_per_token == 70_272
    assert resolve_model("llama-3.1-8b", bytes_per_token=1000).bytes_per_token == 1000
    assert resolve_model(None).name == "llama-3.1-70b"


@pytest.mark.parametrize("text, message", [
    ("layers=32,kv_heads=8", "give layers and either"),
    ("layers=32,heads=8,head_dim=128", "expected key=value"),
    ("layers=x,mla_dim=576", "layers must be an integer"),
    ("layers=0,mla_dim=576", "layers must be positive"),
])
def test_bad_geometry_is_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_geometry(text)


def test_gib_arithmetic_by_hand() -> None:
    # 8,192 tokens × 131,072 B = 2^13 × 2^17 = 2^30 B = 1 GiB; 1 GiB / (131,072 B × 64 tokens) = 128 blocks.
    assert tokens_to_gib(8192, 131_072) == 1.0
    assert tokens_to_gib(None, 131_072) is None
    assert gib_to_blocks(1, 131_072, 64) == 128
    assert gib_to_blocks(1.5, 327_680, 64) == 76  # 1,610,612,736 / 20,971,520 = 76.8


def test_tier_split_by_hand() -> None:
    # A writes 1,2,3; B writes 4,5; C reads 1,2,3. LRU stack before C (top first): 4 5 1 2 3, so
    # C's blocks sit at depths 3, 4, 5. With 1 GiB per token and one-token blocks, tiers of 3, 1
    # and 1 GiB hold depths 1-3, 4 and 5: one hit block each, of 3 + 2 + 3 = 8 prompt tokens.
    events = [CacheEvent(0, 0, [1, 2, 3], 3), CacheEvent(1, 1, [4, 5], 2), CacheEvent(2, 2, [1, 2, 3], 3)]
    profile = lru_profile(events, block_size=1)
    tiers = tier_split(profile, (("HBM", 3), ("DRAM", 1), ("SSD", 1)), GIB)
    assert [(t.name, t.capacity_blocks, t.hit_tokens, t.hit_rate) for t in tiers] == [
        ("HBM", 3, 1, 0.125), ("DRAM", 1, 1, 0.125), ("SSD", 1, 1, 0.125)]
    # HBM of 4 holds depths 1-4 (two hits); half a GiB of DRAM holds no whole block; the SSD the rest.
    tiers = tier_split(profile, (("HBM", 4), ("DRAM", 0.5), ("SSD", 10)), GIB)
    assert [(t.capacity_blocks, t.hit_tokens) for t in tiers] == [(4, 2), (0, 0), (10, 1)]


def test_parse_tiers() -> None:
    assert parse_tiers("40,256,2048") == (("HBM", 40.0), ("DRAM", 256.0), ("SSD", 2048.0))
    assert parse_tiers("HBM=80, CXL=512") == (("HBM", 80.0), ("CXL", 512.0))
    for bad in ("", "a", "1,2,3,4", "-1"):
        with pytest.raises(ValueError):
            parse_tiers(bad)


def _report(args: list[str]) -> dict:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["reports"][0]


def test_example_capacity_for_95_percent_in_gib(example_db: Path, tmp_path: Path) -> None:
    report = _report([str(example_db), "--conversation-id", "combined", "--projects-path",
                      str(ROOT / "examples" / "jsonl"), "--output-dir", str(tmp_path / "out"), "--json",
                      "--kv-model", "deepseek-v3", "--kv-tiers", "8,64"])
    capacity = report["capacity_bytes"]
    assert capacity["model"] == "deepseek-v3" and capacity["bytes_per_token"] == 70_272
    assert [(s["label"], s["tokens"]) for s in capacity["lru"]] == [("90 %", 114_176), ("95 %", 126_528), ("99 %", 156_416)]
    assert capacity["lru"][1]["gib"] == 126_528 * 70_272 / GIB
    assert capacity["opt"][1]["tokens"] == 108_992
    presets = {p["model"]: p["lru_gib"][1] for p in capacity["presets"]}  # 95 % of infinite
    assert presets["llama-3.1-8b"] == 15.4453125         # 126,528 × 131,072 B
    assert presets["llama-3.1-70b"] == 38.61328125       # 126,528 × 327,680 B
    assert presets["gpt-oss-120b"] == 4.343994140625     # 126,528 × 36,864 B
    assert capacity["working_set"][-1] == {"label": "∞", "tokens": 283_136, "gib": 283_136 * 70_272 / GIB}
    # 8 GiB hold 8 × 2^30 / (70,272 B × 64) = 1,909.97 → 1,909 blocks; 64 GiB of DRAM 15,279 more.
    assert [(t["name"], t["capacity_blocks"], t["hit_tokens"]) for t in capacity["tiers"]] == [
        ("HBM", 1909, 2_575_936), ("DRAM", 15279, 181_248)]
    # Together they hold every block ever read: the infinite-cache hit rate.
    assert sum(t["hit_rate"] for t in capacity["tiers"]) == pytest.approx(capacity["infinite_hit_rate"])
    stats = (tmp_path / "out" / "combined_stats.txt").read_text()
    assert "== Capacity in bytes (KV model, tiers) ==" in stats
    assert "95 %                  126,528 tok = 8.281 GiB  108,992 tok = 7.133 GiB" in stats
    # The example is a cleaned old-proxy capture: the fit is to the estimated reads (lib/capture/turn_timing.py).
    assert ("== Effective eviction time (TTL fitted to the billed cache reads, estimated: cleaned old-proxy capture) =="
            in stats)
    assert "all           92       88.6%          4m30s  4m30s–5m    88.1%  -0.6 pp      0.6%" in stats
    html = (tmp_path / "out" / "combined.html").read_text()
    assert 'id="capacity-bytes"' in html and "8.281 GiB" in html
    assert "LRU tokens for 95 % of the infinite-cache hit rate · 8.281 GiB on deepseek-v3" in html
    assert 'id="eviction"' in html and "<td>4m30s–5m</td>" in html


@pytest.mark.parametrize("args, message", [
    (["--kv-geometry", "layers=2"], "Error: --kv-geometry: give layers and either"),
    (["--kv-tiers", "40,x"], "Error: --kv-tiers: tier size must be a number of GiB"),
])
def test_bad_kv_flags_exit_2_with_one_line(example_db: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, [str(example_db), "--conversation-id", "combined", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1


def test_bytes_per_token_flag_overrides_the_preset(example_db: Path, tmp_path: Path) -> None:
    report = _report([str(example_db), "--conversation-id", "combined", "--text-only", "--json",
                      "--output-dir", str(tmp_path), "--kv-bytes-per-token", "1024"])
    assert report["capacity_bytes"]["bytes_per_token"] == 1024
    # No --projects-path: every row unlinked, starts refined without the logs' times, so not 126,528.
    assert report["capacity_bytes"]["lru"][1]["gib"] == 130_624 * 1024 / GIB
