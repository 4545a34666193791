"""The baseline of bench/flink.py: the same work as a plain PyFlink job, without the engine.

    .venv-flink/bin/python bench/flink_native.py IN.jsonl OUT_DIR PARALLELISM

A ``FileSource`` of text lines over the JSONL input → ``map`` (``json.loads``, the
``transforms:enrich`` step of bench/transforms.py, ``json.dumps``) → a ``FileSink`` of rows,
in BATCH mode — what a PyFlink user would write by hand for the job the engine runs from its
spec. Runs on the local mini-cluster, or on a cluster under ``flink run -py bench/flink_native.py
… IN OUT P`` (bench/flink.py --cluster). Prints the number of records written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    from pyflink.common import Configuration, Encoder, Types, WatermarkStrategy
    from pyflink.datastream import RuntimeExecutionMode, StreamExecutionEnvironment
    from pyflink.datastream.connectors.file_system import FileSink, FileSource, StreamFormat

    inp, out, parallelism = argv[0], argv[1], int(argv[2])
    config = Configuration()
    config.set_string("python.executable", sys.executable)
    config.set_string("python.client.executable", sys.executable)
    config.set_string("python.pythonpath", str(BENCH))  # transforms.py, as the engine's job gets it
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    env.set_parallelism(parallelism)
    source = FileSource.for_record_stream_format(StreamFormat.text_line_format(), inp).build()

    def enrich(line: str) -> str:
        from transforms import enrich as step

        return json.dumps(step(json.loads(line)))

    lines = env.from_source(source, WatermarkStrategy.no_watermarks(), "in")
    lines.map(enrich, output_type=Types.STRING()).sink_to(
        FileSink.for_row_format(out, Encoder.simple_string_encoder()).build())
    env.execute("native enrich")
    written = sum(1 for f in Path(out).rglob("*") if f.is_file() for _ in f.open(encoding="utf-8"))
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
