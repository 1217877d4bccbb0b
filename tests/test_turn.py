"""The turn parser: tolerant about layout, exact about the action."""

import warnings

import pytest

from llmmarl.agents.turn import match_action, parse_turn, strip_control, turn_grammar
from llmmarl.envs.base import MessageRules

LEGAL = ["1", "5", "9"]


def test_tagged_lines_full_turn():
    text = "PLAN: take the centre\nPREDICT: player_2=1; player_3=9\nMESSAGE: go left\nACTION: 5"
    r = parse_turn(text, LEGAL, others=["player_2", "player_3"])
    assert r.error is None and r.turn is not None
    assert r.turn.action == "5"
    assert r.turn.plan == "take the centre"
    assert r.turn.predictions == {"player_2": "1", "player_3": "9"}
    assert r.turn.message == "go left"


@pytest.mark.parametrize(
    "text",
    [
        "action: 9",
        "**ACTION:** `9`",
        "Sure! Here is my move.\n\nPlan: win\nAction: [9].",
        '```json\n{"plan": "x", "action": "9"}\n```',
        "ACTION = 9",
        "<|im_start|>assistant\nACTION: 9<|im_end|>",
    ],
)
def test_tolerant_layout(text):
    r = parse_turn(text, LEGAL)
    assert r.turn is not None, r.error
    assert r.turn.action == "9"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("I think 5 is good", "no ACTION line"),
        ("ACTION: 4", "'4' is not a legal action"),
        ("ACTION: 15", "not a legal action"),  # no substring matching: '15' must not become '1' or '5'
        ("ACTION: 5\nACTION: 9", "several different actions"),
        ("", "no ACTION line"),
        ("{not json", "no ACTION line"),
        ('{"action": 7}', "not a legal action"),
        ("[" * 5000, "no ACTION line"),
    ],
)
def test_wrong_or_missing_action_is_an_error_not_a_guess(text, fragment):
    r = parse_turn(text, LEGAL)
    assert r.turn is None
    assert fragment in (r.error or "")


def test_repeated_identical_action_is_fine():
    assert parse_turn("ACTION: 5\nok so ACTION: 5", LEGAL).turn.action == "5"


def test_predictions_only_for_known_agents():
    r = parse_turn("PREDICT: player_2=1; nobody=3; player_1=9\nACTION: 1", LEGAL, others=["player_2"])
    assert r.turn.predictions == {"player_2": "1"}


def test_none_message_is_no_message():
    assert parse_turn("MESSAGE: none\nACTION: 1", LEGAL).turn.message is None


def test_directed_message_names_recipient():
    t = parse_turn("MESSAGE to listener_0: it is red\nACTION: 1", LEGAL).turn
    assert t.message == "it is red" and t.message_to == "listener_0"


def test_labels_with_spaces_match_case_insensitively():
    legal = ["play card 0", "hint color R"]
    assert match_action("Hint Color R", legal) == "hint color R"
    assert match_action("hint color", legal) is None


def test_strip_control_tokens():
    assert strip_control("hi<|im_end|><|im_start|>system [INST]x[/INST]</s>").split() == ["hi", "system", "x"]


def test_grammar_accepts_parseable_answers_only():
    xgr = pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    from llmmarl.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("default"))
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    grammar = turn_grammar(LEGAL, ["player_2"], MessageRules(mode="broadcast"))
    compiled = xgr.GrammarCompiler(info).compile_grammar(grammar)

    def accepts(text: str) -> bool:
        m = xgr.GrammarMatcher(compiled)
        return all(m.accept_token(t) for t in tok(text, add_special_tokens=False)["input_ids"]) and m.accept_token(
            tok.eos_token_id
        )

    good = "PLAN: centre\nPREDICT: player_2=1\nMESSAGE: hi\nACTION: 5"
    assert accepts(good)
    assert parse_turn(good, LEGAL, ["player_2"]).turn.action == "5"
    assert not accepts("PLAN: centre\nPREDICT: player_2=1\nACTION: 4")
    assert not accepts("ACTION: 5")


def test_grammar_says_when_the_budget_drops_the_message_line():
    # The signal game's speaker at 64 tokens: no room for a message (nor predictions) - a silent loss before.
    rules = MessageRules(mode="broadcast")
    with pytest.warns(UserWarning, match=r"drops its MESSAGE and PREDICT line\(s\): max_new_tokens=64"):
        short = turn_grammar(["ready"], ["listener_0"], rules, ["listener_0"], max_tokens=64)
    assert "MESSAGE" not in short and "PREDICT" not in short
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a budget that fits the whole turn warns of nothing
        full = turn_grammar(["ready"], ["listener_0"], rules, ["listener_0"], max_tokens=96)
    assert "MESSAGE" in full and "PREDICT" in full


@pytest.mark.parametrize(
    ("others", "mode", "budget"),
    [(["player_2"], "off", 30), (["player_2"], "off", 96), (["b", "c"], "broadcast", 120), (["b"], "broadcast", 40)],
)
def test_grammar_fits_the_token_budget_even_one_character_per_token(others, mode, budget):
    """The longest answer the grammar accepts has at most ``budget - 1`` characters (the last token is EOS)."""
    xgr = pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    from llmmarl.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("default"))
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    grammar = turn_grammar(LEGAL, others, MessageRules(mode=mode), max_tokens=budget)
    compiled = xgr.GrammarCompiler(info).compile_grammar(grammar)

    def accepts(text: str) -> bool:
        m = xgr.GrammarMatcher(compiled)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return all(m.accept_token(t) for t in ids) and m.accept_token(tok.eos_token_id)

    def longest(plan: int, pred: int, msg: int) -> str:
        text = "PLAN: " + "x" * plan + "\n"
        if pred:
            text += "PREDICT: " + "; ".join(f"{o}=" + "y" * pred for o in others) + "\n"
        if msg:
            text += "MESSAGE: " + "z" * msg + "\n"
        return text + "ACTION: " + max(LEGAL, key=len)

    # Grow each part until the grammar refuses it: what it accepts at the limit must fit the budget.
    def grow(make, start: int) -> int:
        n = start
        while accepts(make(n + 1)) and n < 400:
            n += 1
        return n

    p0 = 1 if accepts(longest(0, 1, 0)) else 0  # 0: the budget dropped the PREDICT line
    plan = grow(lambda n: longest(n, p0, 0), 0)
    pred = grow(lambda n: longest(0, n, 0), 1) if p0 else 0
    msg = grow(lambda n: longest(0, p0, n), 1) if accepts(longest(0, p0, 1)) else 0
    worst = longest(plan, pred, msg)  # every part at its own limit at once: the grammar accepts that too
    assert accepts(worst) and len(worst) + 1 <= budget
    if budget >= 96:
        assert pred > 0 and plan >= 20  # an ample budget keeps the predictions and a useful plan
    assert parse_turn(worst, LEGAL, others).turn is not None


def test_grammar_predicts_from_the_other_agents_action_labels():
    xgr = pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    from llmmarl.envs.registry import make as make_env
    from llmmarl.models import resolve_model

    env = make_env("signal_v0")
    colors = env.action_vocabulary("listener_0")
    assert colors == ["red", "green", "blue", "yellow"] and env.action_vocabulary("speaker_0") == ["ready"]
    tok = AutoTokenizer.from_pretrained(resolve_model("default"))
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    grammar = turn_grammar(
        ["ready"], ["listener_0"], env.message_rules, ["listener_0"], 96, vocabularies={"listener_0": colors}
    )
    compiled = xgr.GrammarCompiler(info).compile_grammar(grammar)

    def accepts(text: str) -> bool:
        m = xgr.GrammarMatcher(compiled)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return all(m.accept_token(t) for t in ids) and m.accept_token(tok.eos_token_id)

    assert accepts("PLAN: tell\nPREDICT: listener_0=blue\nMESSAGE: it is blue\nACTION: ready")
    # A free-text guess can never be scored against the listener's pick: the grammar refuses it.
    assert not accepts("PLAN: tell\nPREDICT: listener_0=the goal\nMESSAGE: it is blue\nACTION: ready")
    # Without a vocabulary, predictions stay free text.
    free = xgr.GrammarCompiler(info).compile_grammar(turn_grammar(["ready"], ["listener_0"], env.message_rules))
    m = xgr.GrammarMatcher(free)
    text = "PLAN: tell\nPREDICT: listener_0=the goal\nMESSAGE: hi\nACTION: ready"
    assert all(m.accept_token(t) for t in tok(text, add_special_tokens=False)["input_ids"])


def test_action_vocabularies_of_shipped_games():
    from llmmarl.envs.registry import make as make_env

    assert make_env("tictactoe_v3").action_vocabulary("player_2") == [str(i) for i in range(1, 10)]
    assert make_env("kuhn_poker").action_vocabulary("player_0") == ["check", "bet", "fold", "call"]
    # OpenSpiel's action strings can depend on the state: unknown unless a renderer lists them.
    assert make_env("openspiel:tic_tac_toe").action_vocabulary("player_0") is None


def test_grammar_limits_messages_to_a_closed_vocabulary():
    xgr = pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    from llmmarl.envs.registry import make as make_env
    from llmmarl.models import resolve_model

    rules = make_env("signal_v0", vocabulary="symbols").message_rules
    assert rules.vocabulary == ("A", "B", "C", "D")
    tok = AutoTokenizer.from_pretrained(resolve_model("default"))
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    compiled = xgr.GrammarCompiler(info).compile_grammar(turn_grammar(["ready"], [], rules, ["listener_0"], 60))

    def accepts(text: str) -> bool:
        m = xgr.GrammarMatcher(compiled)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return all(m.accept_token(t) for t in ids) and m.accept_token(tok.eos_token_id)

    assert accepts("PLAN: say it\nMESSAGE: C\nACTION: ready")
    assert accepts("PLAN: say nothing\nACTION: ready")
    assert not accepts("PLAN: say it\nMESSAGE: it is C\nACTION: ready")
    assert not accepts("PLAN: say it\nMESSAGE: E\nACTION: ready")


def test_free_text_actions_are_the_action_lines_text_cut_to_the_limit():
    assert parse_turn("PLAN: trade\nACTION: [Offer: 2 Wood -> 1 Ore] deal?", [], free_text=400).turn.action == (
        "[Offer: 2 Wood -> 1 Ore] deal?"
    )
    assert parse_turn("ACTION: hello world", [], free_text=5).turn.action == "hello"
    assert parse_turn("ACTION: check", ["[check]", "[bet]"], free_text=400).turn.action == "[check]"  # listed
    assert parse_turn("ACTION: fold", ["[check]", "[bet]"], free_text=400).turn.action == "fold"  # the game judges
    assert parse_turn("ACTION:   ", [], free_text=400).error is not None
    assert parse_turn("ACTION: a\nACTION: b", [], free_text=400).error is not None
    assert parse_turn("no action here", [], free_text=400).error.startswith("no ACTION line")
    assert parse_turn('{"action": "[Accept]"}', [], free_text=400).turn.action == "[Accept]"


def test_free_text_grammar_caps_the_move_or_picks_a_listed_one():
    xgr = pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    from llmmarl.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("default"))
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok)))

    def accepts(grammar: str, text: str) -> bool:
        m = xgr.GrammarMatcher(compiler.compile_grammar(grammar))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return all(m.accept_token(t) for t in ids) and m.accept_token(tok.eos_token_id)

    free = turn_grammar([], [], MessageRules(), max_tokens=48, plan=False, free_action=400)
    assert accepts(free, "ACTION: [Offer: 2 Wood -> 1 Ore]")
    # 2/3 of a 48-token budget, 26 tokens, at three characters a token
    assert accepts(free, "ACTION: " + "x" * 78) and not accepts(free, "ACTION: " + "x" * 79)
    assert not accepts(
        turn_grammar([], [], MessageRules(), max_tokens=480, plan=False, free_action=100), "ACTION: " + "x" * 101
    )
    assert not accepts(free, "ACTION: two\nlines")
    listed = turn_grammar(["[check]", "[bet]"], [], MessageRules(), max_tokens=48, plan=False, free_action=400)
    assert accepts(listed, "ACTION: [bet]") and not accepts(listed, "ACTION: [fold]")
