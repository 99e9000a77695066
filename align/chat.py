"""Chat-style recommendation: free text in, real catalog items out.

    align chat --run_dir runs/demo --message "I bought the Northwind espresso machine, what should I get next?"
    align chat --model you/align-demo          # interactive: one request per line, empty line or Ctrl-D to quit

Items the request names are matched to catalog titles and become the history of the model's next-item prompt;
when nothing matches, the request itself is given as a history in words. Either way the answer is a constrained
top-K: every suggestion is a real catalog item.
"""

import sys
from dataclasses import dataclass, field

from align.recommend import Recommender, format_answer, resolve_model


@dataclass
class ChatArgs:
    run_dir: str = field(default="runs/demo", metadata={"help": "Run directory whose newest model is used."})
    model: str = field(default="", metadata={"help": "Checkpoint folder or hub id (overrides --run_dir)."})
    message: str = field(default="", metadata={"help": "Answer this one request and exit (default: interactive)."})
    k: int = field(default=5, metadata={"help": "How many items to suggest."})
    num_beams: int = field(default=20, metadata={"help": "Beams of the constrained search."})
    device: str = field(default="auto", metadata={"help": "'auto', 'cpu' or 'cuda'."})


def answer(rec: Recommender, message: str, k: int = 5, num_beams: int = 20) -> str:
    """The reply to one request: what was understood, then k catalog items."""
    history = rec.match_titles(message)
    if history:
        prompt = rec.history_prompt(history)
        heard = "; ".join(rec.items[item]["title"] for item in history)
        lead = f"You mentioned: {heard}.\nYou might like next:"
    else:
        prompt = rec.text_prompt(" ".join(message.split()))
        lead = "No catalog item matched your words exactly; from what you wrote, you might like:"
    recs = rec.top_k([prompt], k=k, num_beams=num_beams)[0]
    return f"{lead}\n{format_answer(recs)}"


def run(args: ChatArgs) -> None:
    rec = Recommender(resolve_model(args.run_dir, args.model), device=args.device)
    if args.message:
        print(answer(rec, args.message, args.k, args.num_beams))
        return
    print("Ask for a recommendation (empty line to quit).")
    for line in sys.stdin:
        if not line.strip():
            break
        print(answer(rec, line, args.k, args.num_beams), flush=True)


def main(argv: list[str] | None = None, prog: str = "align chat") -> None:
    from align.config import parse_args

    (args,) = parse_args((ChatArgs,), argv, prog=prog, doc=__doc__)
    run(args)
