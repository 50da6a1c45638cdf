"""``exec-code``: a code block that runs while the documentation is built.

The block is executed in a namespace shared by every ``exec-code`` block of the
same page (so a guide reads as one script, top to bottom); what it prints is
shown below the code. An exception fails the build: it is reported as an error
with the page, the line and the traceback, and ``sphinx-build -W`` (warnings and
errors are fatal) exits non-zero.

Options:

``:hide-output:``  run the code but do not show what it printed.
``:expect: TEXT``  fail unless the printed output contains ``TEXT``.

Each page starts from ``torch.manual_seed(0)``, so the printed numbers are
reproducible on one machine (they may differ in the last digits elsewhere).
"""
import contextlib
import io
import traceback

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

_NAMESPACES = "exec_code_namespace"


def _namespace(env):
    ns = env.temp_data.get(_NAMESPACES)
    if ns is None:
        import torch

        torch.manual_seed(0)
        ns = {"__name__": f"docs.{env.docname.replace('/', '.')}"}
        env.temp_data[_NAMESPACES] = ns
    return ns


class ExecCode(SphinxDirective):
    has_content = True
    option_spec = {"hide-output": directives.flag, "expect": directives.unchanged_required}

    def run(self):
        code = "\n".join(self.content)
        source, line = self.get_source_info()
        buffer = io.StringIO()
        try:
            compiled = compile(code, f"{source}:{line}", "exec")
            with contextlib.redirect_stdout(buffer):
                exec(compiled, _namespace(self.env))
        except Exception:  # noqa: BLE001 - any failure of an example fails the build
            raise self.error("example failed:\n" + traceback.format_exc()) from None
        output = buffer.getvalue()
        expect = self.options.get("expect")
        if expect is not None and expect not in output:
            raise self.error(f"example output lacks {expect!r}; it printed:\n{output}")

        block = nodes.literal_block(code, code, language="python")
        self.set_source_info(block)
        result = [block]
        if output and "hide-output" not in self.options:
            shown = nodes.literal_block(output, output.rstrip("\n"), language="none",
                                        classes=["exec-code-output"])
            self.set_source_info(shown)
            result.append(nodes.rubric("", "Output", classes=["exec-code-output-title"]))
            result.append(shown)
        return result


def setup(app):
    app.add_directive("exec-code", ExecCode)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
