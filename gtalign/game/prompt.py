"""The game-theoretic instruction and the chat messages built around it.

Written in this project's own words; the content and block order follow the method reference,
section 2.3, so a model trained on it writes traces that `trace.parse_trace` can read.
"""

from __future__ import annotations

import json

from gtalign.game.trace import PAYOFF_KEYS

DEFAULT_SYSTEM = (
    "You are a collaborative assistant. Work out what the user actually needs and keep track of it "
    "as the conversation goes on. If a request is unclear or missing details, ask for them rather "
    "than guess, with specific questions or a few concrete options to choose from. Be accurate, "
    "well organised and brief; do not repeat yourself; match the user's tone. When you do not "
    "know something, say so and suggest where to look. Invite feedback as you go."
)

# The illustrative matrix of the reference prompt (method reference, section 2.3).
EXAMPLE_PAYOFF = {
    "DQ_AQ": {"LLM": 2.2, "user": 1.9},
    "DQ_CQ": {"LLM": 3.1, "user": 3.5},
    "DQ_DA": {"LLM": 4.2, "user": 4.3},
    "VQ_AQ": {"LLM": 2.0, "user": 2.1},
    "VQ_CQ": {"LLM": 1.3, "user": 1.2},
    "VQ_DA": {"LLM": 2.0, "user": 1.8},
}

MULTI_TURN_PREFIX = "The user's initial question is"  # literal, as in the reference data

_KEYS = ", ".join(PAYOFF_KEYS)

INSTRUCTION = f"""\
Reply to the user's most recent question by treating this turn as a small game between you (the \
LLM) and the user.

Write exactly four blocks, in this order, and nothing outside them: \
<thinking>...</thinking>, <payoff>...</payoff>, <analyze>...</analyze>, <response>...</response>. \
No markdown, no code fences, no commentary outside the tags.

<thinking>: a short game-theoretic look at this turn. Decide whether the question is definite \
(DQ: clear and answerable as asked) or vague (VQ: ambiguous or missing details). Weigh your three \
strategies: DA, a direct answer; CQ, a clarifying question and no answer yet; AQ, an answer \
followed by exactly one targeted follow-up question. For each, say what it means for you and for \
the user: the risk of a wrong answer, whether the ambiguity gets resolved, the user's time and \
effort, token and compute cost, satisfaction, and the chance of success. Two to five concrete \
sentences, and no numbers yet.

<payoff>: a strict JSON object (no comments, no trailing commas) with exactly the six keys \
{_KEYS}. Each key maps to an object with two float fields, "LLM" and "user". Put all values on \
one scale where higher is better, 0 is neutral and negative values are costs; keep them roughly \
within [-5.0, 5.0] with at most one decimal, and consistent with your thinking. An illustration of \
the shape (choose your own numbers):
{json.dumps(EXAMPLE_PAYOFF)}

<analyze>: treat each of the six strategies as a point (LLM, user) and find the Pareto frontier: \
list the points that no other point dominates and say briefly why the rest are dominated. Then \
recommend ONE strategy by this rule: (1) the largest LLM + user (social welfare); (2) if tied, the \
largest user payoff; (3) if still tied, the largest LLM payoff. Justify it in one to three \
sentences and name the chosen key (for example DQ_DA) last.

<response>: carry out the chosen strategy on the actual question. DA: a concise direct answer \
only. CQ: exactly one clarifying question, the most informative one, and no answer yet. AQ: a \
brief, helpful answer followed by exactly one focused follow-up question. Do not mention payoffs, \
strategies or these tags.

Rules: nothing outside the four tags; key and field names exactly as given; keep the thinking \
short and free of repetition and the analysis focused."""


# A short form of the same instruction for small models on small machines: every prompt token is
# prefilled on each rollout and recomputed in each update, and 135M-parameter models follow a
# short instruction no worse than a long one once fine-tuned on traces.
COMPACT_INSTRUCTION = (
    "Answer as a game between you (LLM) and the user. Write four blocks and nothing else: "
    "<thinking> is the question definite (DQ) or vague (VQ)? </thinking> "
    f"<payoff> JSON with keys {_KEYS}, each {{\"LLM\": x, \"user\": y}} </payoff> "
    "<analyze> choose the key with the largest LLM + user </analyze> "
    "<response> DA: answer directly; CQ: ask one clarifying question; AQ: answer, then ask one "
    "question </response>")
COMPACT_SYSTEM = "You are a helpful assistant."
STYLES = ("full", "compact")


def instruction(question: str, style: str = "full") -> str:
  """The instruction for one question; it ends with `Question: <question>`."""
  if style not in STYLES:
    raise ValueError(f"unknown prompt style {style!r}; expected one of {STYLES}")
  text = INSTRUCTION if style == "full" else COMPACT_INSTRUCTION
  return f"{text}\n\nQuestion: {question}"


def build_messages(question: str, system: str | None = None,
                   first_question: str | None = None, style: str = "full") -> list[dict]:
  """Chat messages for one turn: a system persona and the instruction as the user message.

  `system=None` uses DEFAULT_SYSTEM and `system=""` sends none (the reference's inference does
  not). With `first_question` (multi-turn rows) the user message starts with the literal
  "The user's initial question is" + "Question: <first>", then the instruction for the latest
  question; as in the reference, the intermediate turns are not included.
  """
  content = instruction(question, style)
  if first_question is not None:
    content = f"{MULTI_TURN_PREFIX}Question: {first_question}\n\n{content}"
  if system is None:
    system = DEFAULT_SYSTEM if style == "full" else COMPACT_SYSTEM
  messages = [{"role": "system", "content": system}] if system else []
  return messages + [{"role": "user", "content": content}]


def render(tokenizer, messages: list[dict]) -> str:
  """The prompt text, through the tokenizer's own chat template, ending with the assistant cue."""
  return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
