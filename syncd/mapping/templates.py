"""Text templates such as ``"[{number}] {title}"``: rendering outbound and inverting inbound.

A template is literal text with ``{name}`` placeholders (``{{`` and ``}}`` are literal braces).
Names are a canonical field (``title``, ``custom.customer_impact``) or incident context
(``number``, ``id``, ``url``). The inverse turns a remote value back into the one field the
template carries, so that ``title -> "[SYN-42] Disk full" -> title`` is the identity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|\{|\}")
PLACEHOLDER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class TemplateSyntaxError(ValueError):
    """The template text itself is malformed (an unbalanced brace or an empty placeholder)."""


@dataclass(frozen=True)
class Template:
    text: str
    parts: tuple[str | tuple[str], ...]   # literal text, or (placeholder name,)

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[str | tuple[str]] = []
        literal: list[str] = []
        position = 0
        for match in _TOKEN.finditer(text):
            literal.append(text[position:match.start()])
            position = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
            elif token in ("{", "}"):
                raise TemplateSyntaxError(
                    f"unbalanced {token!r} at offset {match.start()} (write {token * 2} for a literal brace)")
            else:
                name = match.group(1).strip()
                if not PLACEHOLDER_NAME.fullmatch(name):
                    raise TemplateSyntaxError(f"placeholder {{{match.group(1)}}} is not a field name")
                parts.append("".join(literal))
                literal = []
                parts.append((name,))
        literal.append(text[position:])
        parts.append("".join(literal))
        return cls(text, tuple(p for p in parts if p != ""))

    @property
    def placeholders(self) -> list[str]:
        return [p[0] for p in self.parts if isinstance(p, tuple)]

    def render(self, lookup: Callable[[str], Any]) -> str:
        """Fill every placeholder with ``lookup(name)``; None renders as empty text."""
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, tuple):
                value = lookup(part[0])
                out.append("" if value is None else str(value))
            else:
                out.append(part)
        return "".join(out)

    def extract(self, carried: str, rendered: str) -> str | None:
        """The value of placeholder ``carried`` inside ``rendered``, or None when the text does not
        have the template's shape (someone edited the prefix away)."""
        pattern: list[str] = []
        for part in self.parts:
            if isinstance(part, tuple):
                pattern.append("(?P<carried>.*)" if part[0] == carried else ".*?")
            else:
                pattern.append(re.escape(part))
        match = re.fullmatch("".join(pattern), rendered, flags=re.DOTALL)
        return match.group("carried") if match else None
