"""Layout rules of `terraform fmt`, checked without terraform (no registry reachable here ships
it): two-space indentation by nesting depth, `=` of consecutive attributes aligned one space after
the longest name, one space after `=`, no tabs, no trailing spaces, one final newline. Also the
module contract: pinned providers, documented variables and outputs."""

from __future__ import annotations

import re
from pathlib import Path

ATTR = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_-]*|\"[^\"]+\")(\s*)=(\s*)(\S.*)?$")


def _scan(line: str, stack: list[int]) -> tuple[int, str | None]:
    """Walks one line's brackets outside strings and comments, updating `stack` (one entry per
    indentation level: how many brackets the line that opened it left open; several openers on
    one line make one level, as in terraform fmt). Returns (levels after the line's leading
    closers, heredoc terminator if the line starts one)."""
    i, n = 0, len(line)
    seen_code = False
    indent_levels = None
    pending = 0

    def close() -> None:
        nonlocal pending
        if pending:
            pending -= 1
        elif stack:
            stack[-1] -= 1
            if stack[-1] == 0:
                stack.pop()

    heredoc = None
    while i < n:
        c = line[i]
        if c == '"':
            if indent_levels is None:
                indent_levels = len(stack)
            seen_code = True
            i += 1
            nest = 0
            while i < n:
                if line[i] == "\\":
                    i += 2
                    continue
                if line.startswith("${", i) or line.startswith("%{", i):
                    nest += 1
                    i += 2
                    continue
                if line[i] == "}" and nest:
                    nest -= 1
                elif line[i] == '"' and not nest:
                    break
                i += 1
            i += 1
            continue
        if c == "#" or line.startswith("//", i):
            break
        m = re.match(r"<<-?([A-Z_]+)\s*$", line[i:])
        if m:
            heredoc = m.group(1)
            break
        if c in "{[(":
            if indent_levels is None:
                indent_levels = len(stack)
            seen_code = True
            pending += 1
        elif c in "}])":
            close()
        elif not c.isspace():
            if indent_levels is None:
                indent_levels = len(stack)
            seen_code = True
        i += 1
    if indent_levels is None:
        indent_levels = len(stack)
    if pending:
        stack.append(pending)
    return indent_levels, heredoc


def check(text: str) -> list[str]:
    problems: list[str] = []
    if not text.endswith("\n") or text.endswith("\n\n"):
        problems.append("must end with exactly one newline")
    lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    heredoc: str | None = None
    group: list[tuple[int, int, int]] = []  # (line number, name end column, '=' column)
    group_indent = -1

    def close_group() -> None:
        nonlocal group
        if len(group) > 1:
            want = max(end for _, end, _ in group) + 1
            for no, _, eq in group:
                if eq != want:
                    problems.append(f"line {no}: `=` not aligned with the attributes around it (column {eq + 1}, want {want + 1})")
        elif len(group) == 1:
            no, end, eq = group[0]
            if eq != end + 1:
                problems.append(f"line {no}: one space before `=`")
        group = []

    stack: list[int] = []
    for no, line in enumerate(lines, 1):
        if heredoc:
            if line.strip() == heredoc:
                heredoc = None
            continue
        if "\t" in line:
            problems.append(f"line {no}: tab character")
        if line != line.rstrip():
            problems.append(f"line {no}: trailing whitespace")
        stripped = line.strip()
        levels_before = len(stack)
        levels, heredoc = _scan(line, stack)
        if not stripped:
            close_group()
            group_indent = -1
            continue
        want_indent = 2 * levels
        indent = len(line) - len(line.lstrip(" "))
        if indent != want_indent and not stripped.startswith("#"):
            problems.append(f"line {no}: indented {indent} spaces, want {want_indent}")
        m = ATTR.match(line)
        opens_block = len(stack) > levels_before or heredoc is not None
        if m and not stripped.startswith("#") and not opens_block:
            if indent != group_indent:
                close_group()
                group_indent = indent
            name_end = len(m.group(1)) + len(m.group(2))
            eq = name_end + len(m.group(3))
            if m.group(5) is not None and m.group(4) != " ":
                problems.append(f"line {no}: one space after `=`")
            group.append((no, name_end, eq))
        else:
            # Blocks, comments and attributes whose value spans lines end an alignment group.
            if m and opens_block and len(m.group(3)) != 1:
                problems.append(f"line {no}: one space before `=`")
            close_group()
            group_indent = -1
    close_group()
    if stack:
        problems.append("unbalanced brackets at end of file")
    return problems


def check_module_contract(root: Path) -> list[str]:
    """Pinned providers and Terraform version; every variable typed and described; every output
    described; outputs holding credentials marked sensitive."""
    import hcl2

    problems: list[str] = []
    for d in sorted({p.parent for p in root.rglob("*.tf")}):
        blocks: dict[str, list] = {"terraform": [], "variable": [], "output": []}
        for f in sorted(d.glob("*.tf")):
            with f.open() as fh:
                parsed = hcl2.load(fh)
            for key in blocks:
                blocks[key].extend(parsed.get(key, []))
        where = str(d.relative_to(root.parent))
        tf = blocks["terraform"]
        if not tf:
            problems.append(f"{where}: no terraform block (required_version, required_providers)")
        for t in tf:
            if "required_version" not in t:
                problems.append(f"{where}: terraform block without required_version")
            for rp in t.get("required_providers", []):
                for name, spec in ((k, v) for k, v in rp.items() if not k.startswith("__")):
                    version = spec.get("version") if isinstance(spec, dict) else None
                    if not version or not re.search(r"(~>|=)\s*\d", str(version)):
                        problems.append(f"{where}: provider {name} is not pinned (version = \"~> X.Y\")")
        for v in blocks["variable"]:
            for name, body in ((k, b) for k, b in v.items() if not k.startswith("__")):
                name = name.strip('"')
                if not body.get("description"):
                    problems.append(f"{where}: variable {name} has no description")
                if "type" not in body:
                    problems.append(f"{where}: variable {name} has no type")
        for o in blocks["output"]:
            for name, body in ((k, b) for k, b in o.items() if not k.startswith("__")):
                name = name.strip('"')
                if not body.get("description"):
                    problems.append(f"{where}: output {name} has no description")
                if re.search(r"kubeconfig|secret|token|password", name) and body.get("sensitive") is not True:
                    problems.append(f"{where}: output {name} must be sensitive")
    return problems
