"""Pipeline speed: read an Ordered Product CSV, map and serialise every row on one core.

    uv run python -m bench.pipeline [--quick] [--rows N] [--profile]

Compares rows/s (CPU time of this one process) with Klaviyo's bulk event ceiling (150 jobs x
1,000 events per minute = 2,500/s): the mapping stage must never be what holds a backfill back.
The last line printed is the summary.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from klaviyo.serialization import dumps
from sync.mapping import (
    FieldRule,
    IntegerCast,
    Mapping,
    MappingOptions,
    NumberCast,
    Split,
    Target,
    TargetKind,
    TemplateSource,
    column,
)
from sync.pipeline import Pipeline
from sync.readers import read_csv

KLAVIYO_BULK_EVENTS_PER_S = 2_500
COLUMNS = ["Email", "OrderId", "OrderDate", "SKU", "ProductID", "ProductName", "Quantity", "ItemPrice"]
COLUMNS += ["RowTotal", "Categories", "Brand", "ProductURL"]
HEADER = ",".join(COLUMNS)
_PRODUCTS = [
    ("WINNIEPOOH", "1111", "Winnie the Pooh", "9.99", "Fiction|Children", "Kids Books"),
    ("TALEOFTWO", "1112", "A Tale of Two Cities", "19.99", "Fiction|Classics", "Harcourt Classics"),
    ("LAMP-OAK", "2001", "Oak Lamp, large", "1,299.00", "Home|Lighting", "Nordlys"),
    ("MUG-BLUE", "3003", 'Mug "Blue"', "12.50", "Kitchen", "Tasse & Co"),
]


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write a realistic Ordered Product export: a few lines per order, quoted cells, thousands commas."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + "\n")
        written, order = 0, 100_000
        while written < rows:
            order += 1
            customer = rng.randrange(200_000)
            month, day, hour, minute = (
                rng.randrange(1, 13),
                rng.randrange(1, 28),
                rng.randrange(24),
                rng.randrange(60),
            )
            stamp = f"2024-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:00"
            for _ in range(min(rng.randrange(1, 5), rows - written)):
                sku, pid, name, price, cats, brand = rng.choice(_PRODUCTS)
                qty = rng.randrange(1, 4)
                total = f"{float(price.replace(',', '')) * qty:.2f}"
                quoted_name = '"' + name.replace('"', '""') + '"'
                out.write(
                    f"customer{customer}@shop.io,{order},{stamp},{sku},{pid},{quoted_name},{qty},"
                    f'"{price}",{total},{cats},{brand},https://shop.io/p/{pid}\n'
                )
                written += 1


def ordered_product_mapping() -> Mapping:
    """The mapping a backfill of this export would use."""
    return Mapping(
        name="bench Ordered Product",
        target=Target(kind=TargetKind.EVENT, metric="Ordered Product"),
        options=MappingOptions(default_currency="USD", default_timezone="America/New_York"),
        fields=[
            column("Email", "email"),
            column("OrderDate", "time"),
            column("RowTotal", "value"),
            FieldRule(source=TemplateSource(template="{OrderId}_{SKU}"), target="unique_id"),
            column("OrderId", "properties.OrderId"),
            column("ProductID", "properties.ProductID"),
            column("SKU", "properties.SKU"),
            column("ProductName", "properties.ProductName"),
            column("Quantity", "properties.Quantity", IntegerCast()),
            column("ItemPrice", "properties.ItemPrice", NumberCast()),
            column("Categories", "properties.Categories", Split(separator="|")),
            column("Brand", "properties.ProductBrand"),
            column("ProductURL", "properties.ProductURL"),
        ],
    )


def run(path: Path) -> tuple[int, int, int, float, float]:
    """(rows, items, bytes, cpu seconds, wall seconds) to read, map and serialise the whole file."""
    pipeline = Pipeline(ordered_product_mapping())
    rows = items = size = 0
    wall, cpu = time.perf_counter(), time.process_time()
    for result in pipeline.run(read_csv(path)):
        rows += 1
        for item in result.items:
            size += len(dumps(item))
            items += 1
    return rows, items, size, time.process_time() - cpu, time.perf_counter() - wall


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 rows instead of 1,000,000")
    parser.add_argument("--rows", type=int, help="number of rows (overrides --quick)")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile run")
    args = parser.parse_args(argv)
    count = args.rows or (100_000 if args.quick else 1_000_000)
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        path = Path(tmp) / "ordered_products.csv"
        started = time.perf_counter()
        generate(path, count)
        mb = path.stat().st_size / 1e6
        print(f"generated {count:,} rows ({mb:.1f} MB) in {time.perf_counter() - started:.1f}s")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(run, path)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        rows, items, size, cpu, wall = run(path)
    # rows/s is measured in CPU time of this one process: on a shared machine wall time also counts
    # other processes' turns on the core. Both are printed; on an idle machine they agree.
    rate = rows / cpu
    print(
        f"mapped+serialised {rows:,} rows into {items:,} items ({size / 1e6:.0f} MB JSON): "
        f"{cpu:.2f}s CPU, {wall:.2f}s wall ({rows / wall:,.0f} rows/s wall)"
    )
    print(
        f"rows={rows} rows_per_s={rate:.0f} ratio={rate / KLAVIYO_BULK_EVENTS_PER_S:.1f} "
        f"peak_rss_mb={peak_rss_mb():.0f} wall_rows_per_s={rows / wall:.0f}"
    )
    return 0 if items == rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
