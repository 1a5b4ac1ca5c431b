"""A person at the terminal, playing any text world through the same prompt and parser as an LLM.

For each turn it prints the world's prompt (after a parse failure: only the world's message about
what was wrong) and reads one reply from stdin. An empty line asks again. End of input (Ctrl-D,
or the end of piped input) and Ctrl-C stop the run the way Ctrl-C does everywhere in Agora: the
run ends as interrupted and every finished episode is kept, with no traceback.

Input is read as UTF-8 with invalid bytes replaced by U+FFFD, whatever the terminal's locale:
what a person types always becomes text that transcripts and trajectories can store.

`interactive = True` tells the CLI not to draw its live progress bar, which would overwrite the
prompt while the person types.
"""

from __future__ import annotations

import sys
from typing import ClassVar

from pydantic import Field

from agora.policy import ActRequest, ActResponse, Policy, PolicyConfig

RULE = "-" * 72


class EndOfInput(KeyboardInterrupt):
    """The person's input ended (EOF): stop the run like Ctrl-C, keeping finished episodes."""


class HumanPolicy(Policy):
    uses_text = True
    interactive: ClassVar[bool] = True  # reads the terminal: the CLI hides its live progress bar

    class Config(PolicyConfig):
        multiline: bool = Field(
            False, description="read a reply of several lines, ended by an empty line (for multi-line reply formats)"
        )
        show_demonstration: bool = Field(False, description="print the world's worked example before the first prompt")

    def __init__(self, config: Config, *, seed: int):
        super().__init__(config, seed=seed)
        self.shown_demonstration = False

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        return [self.ask(request) for request in requests]

    def ask(self, request: ActRequest) -> ActResponse:
        out = sys.stdout
        if self.config.show_demonstration and request.demonstration and not self.shown_demonstration:
            self.shown_demonstration = True
            out.write(f"{RULE}\nWorked example:\n")
            for message in request.demonstration:
                out.write(f"[{message['role']}]\n{message['content']}\n")
        if len(request.messages) > 1:  # a retry: the prompt is on screen, show what was wrong
            out.write(f"\n{request.messages[-1]['content']}\n")
        else:
            out.write(f"{RULE}\nEpisode {request.episode}, you play {request.agent}\n{RULE}\n")
            out.write(request.messages[0]["content"] if request.messages else "")
            out.write("\n")
        end = " (end with an empty line)" if self.config.multiline else ""
        text = self.read(f"your reply{end}> ")
        self.stats.requests += 1
        return ActResponse(text)

    def read(self, prompt: str) -> str:
        """One reply from stdin; empty lines ask again; EOF raises `EndOfInput`."""
        lines: list[str] = []
        while True:
            sys.stdout.write(prompt if not lines else "...> ")
            sys.stdout.flush()
            line = read_line()
            if not line:  # end of input
                if lines:
                    return "\n".join(lines)
                sys.stdout.write("\nend of input: stopping the run (finished episodes are kept)\n")
                sys.stdout.flush()
                raise EndOfInput
            line = line.rstrip("\r\n")
            if not line.strip():
                if lines:
                    return "\n".join(lines)
                sys.stdout.write("(empty reply: type your answer; Ctrl-D or Ctrl-C stops the run)\n")
                continue
            lines.append(line)
            if not self.config.multiline:
                return line


def read_line() -> str:
    """One line of stdin as valid text: bytes decoded as UTF-8 with invalid ones replaced (U+FFFD);
    a text stream without bytes underneath (a test's StringIO) has stray surrogates replaced."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        return buffer.readline().decode("utf-8", errors="replace")
    return valid_text(sys.stdin.readline())


def valid_text(text: str) -> str:
    """`text` with the surrogates that undecodable bytes leave (Python's surrogateescape) decoded as
    UTF-8 with replacement, and any other lone surrogate replaced: it can always be encoded."""
    try:
        return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="replace").decode("utf-8")
