"""An example ActiveDataFlow plugin: a source and a sink to read before writing your own.

``example_lines`` source (:class:`~adf_example_plugin.source.LinesSource`)
    ``{type: example_lines, path: data/, pattern: "*.txt"}`` — every file of a directory,
    one record per line of ``key=value`` pairs; a split per file, positions as byte offsets,
    malformed lines dead-lettered with their file, line and offset.

``example_parts`` sink (:class:`~adf_example_plugin.sink.PartsSink`)
    ``{type: example_parts, directory: out/}`` — records as JSON Lines, one file per reader
    (``part-0.jsonl``, ``part-1.jsonl``…); a resumed run appends to what the earlier attempt
    wrote.

``pyproject.toml`` registers both under the entry-point groups ``active_data_flow.sources``
and ``active_data_flow.sinks``; ``adf connectors`` lists them once the plugin is installed.
"""

from adf_example_plugin.sink import PartsSink
from adf_example_plugin.source import LinesSource, LinesSplit, parse_line

__all__ = ["LinesSource", "LinesSplit", "PartsSink", "parse_line"]
