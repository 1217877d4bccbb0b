"""FORECAST and PLAN scoring: hand-made episodes of every shipped game with known right and wrong answers give
exactly the expected scores; then the runner's real path (prompt, grammar, truth read from the simulator)."""

from __future__ import annotations

import pytest
from conftest import CannedBackend, lowest_legal

from llmmarl.agents.specs import LLMAgentSpec, ScriptedAgentSpec
from llmmarl.agents.turn import Turn, parse_turn, turn_grammar
from llmmarl.envs import make
from llmmarl.envs.base import MessageRules
from llmmarl.records import EpisodeRecord, TurnRecord, outcomes_from_returns, summarise
from llmmarl.runner import Match, Runner
from llmmarl.scoring import score_turns
from llmmarl.scoring.forecast import ForecastError, brier, calibration, read_probabilities
from llmmarl.scoring.plans import plan_steps


def _turn(step, seat, action, legal, forecast=None, plan="", inbox=(), truth=None):
    rec = TurnRecord(
        step=step,
        seat=seat,
        player=seat,
        observation="",
        legal_actions=list(legal),
        inbox=list(inbox),
        turn=Turn(action=action, forecast=forecast, plan=plan),
        action=action,
        action_id=list(legal).index(action),
    )
    rec.forecast_truth = truth
    return rec


def _episode(game, turns, returns):
    env = make(game)
    ep = EpisodeRecord(
        game_id=0,
        env=game,
        seed=0,
        seats={s: s for s in env.possible_agents},
        teams=env.teams,
        returns=returns,
        outcomes=outcomes_from_returns(returns, env.teams),
        turns=turns,
    )
    score_turns(ep, {s: env.forecast_spec(s) for s in env.possible_agents})
    return ep


BOARD = [str(i) for i in range(1, 10)]


@pytest.mark.parametrize(
    "game,a,b", [("tictactoe_v3", "player_1", "player_2"), ("connect_four_v3", "player_0", "player_1")]
)
def test_board_games_score_how_the_game_stands_two_moves_ahead(game, a, b):
    # a wins with its move at step 4. "continues" at step 0 is right; "win" at step 2 is wrong (the game still
    # runs after step 3); "loss" by b at step 3 is right (it ends at step 4, within 2 steps); "draw" is wrong.
    turns = [
        _turn(0, a, "1", BOARD, forecast="continues"),
        _turn(1, b, "2", BOARD, forecast="draw"),
        _turn(2, a, "3", BOARD, forecast="win"),
        _turn(3, b, "4", BOARD, forecast="loss"),
        _turn(4, a, "5", BOARD, forecast="nonsense"),
    ]
    ep = _episode(game, turns, {a: 1.0, b: -1.0})
    assert [t.forecast_score for t in ep.turns] == [1.0, 0.0, 0.0, 1.0, None]
    assert [t.forecast_truth for t in ep.turns] == ["continues", "continues", "continues", "loss", "win"]
    assert ep.turns[4].forecast_error and ep.turns[4].forecast_skill == 0.0


def test_kuhn_scores_the_opponents_card_against_the_dealt_card():
    legal = ["check", "bet"]
    turns = [
        _turn(0, "player_0", "check", legal, forecast="K", truth="K"),
        _turn(1, "player_1", "bet", legal, forecast="jack", truth="Q"),
        _turn(2, "player_0", "check", legal, forecast="Q", truth="K"),
    ]
    ep = _episode("kuhn_poker", turns, {"player_0": -1.0, "player_1": 1.0})
    assert [t.forecast_score for t in ep.turns] == [1.0, None, 0.0]
    assert [t.forecast_skill for t in ep.turns] == [1.0, 0.0, 0.0]  # "jack" is not a label: unreadable, skill 0
    assert ep.turns[1].forecast_error is not None


@pytest.mark.parametrize(
    "game,seats,ret,scale",
    [
        ("leduc_holdem_v4", ("player_0", "player_1"), 1.5, 6.5),
        ("bargaining", ("player_0", "player_1"), 4.0, 10.0),
        ("hanabi_v5", ("player_0", "player_1"), 3.0, 6.0),
    ],
)
def test_chip_and_score_games_score_the_expected_payoff_by_squared_error(game, seats, ret, scale):
    a, b = seats
    turns = [_turn(0, a, "x", ["x"], forecast=f"{ret + 0.5:+g}"), _turn(1, b, "x", ["x"], forecast=f"{ret - 3:g}")]
    other = ret if make(game).teams[a] == make(game).teams[b] else -ret
    ep = _episode(game, turns, {a: ret, b: other})
    assert ep.turns[0].forecast_score == pytest.approx(0.25)
    assert ep.turns[0].forecast_skill == pytest.approx(1 - 0.25 / (2 * scale) ** 2)
    assert ep.turns[1].forecast_score == pytest.approx((ret - 3 - other) ** 2)


def test_rps_scores_outcome_probabilities_by_the_brier_score():
    legal = ["rock", "paper", "scissors"]
    turns = [
        _turn(0, "player_0", "rock", legal, forecast="win=0.5; draw=0.25; loss=0.25"),
        _turn(0, "player_1", "scissors", legal, forecast="win: 0%, draw: 0%, loss: 100%"),
    ]
    ep = _episode("rps_v2", turns, {"player_0": 1.0, "player_1": -1.0})
    assert ep.turns[0].forecast_score == pytest.approx(0.25 + 0.0625 + 0.0625)
    assert ep.turns[0].forecast_skill == pytest.approx(1 - 0.375 / 2)
    assert ep.turns[1].forecast_score == 0.0


def test_signal_scores_win_loss_forecasts_and_whether_the_listener_followed_the_message():
    colors = ["red", "green", "blue", "yellow"]
    turns = [
        _turn(0, "speaker_0", "ready", ["ready"], forecast="win=1; loss=0"),
        _turn(1, "listener_0", "blue", colors, forecast="win=0.2; loss=0.8", inbox=['speaker_0 says: "red"']),
    ]
    ep = _episode("signal_v0", turns, {"speaker_0": 1.0, "listener_0": 1.0})
    assert [t.forecast_score for t in ep.turns] == [0.0, pytest.approx(0.64 + 0.64)]
    assert ep.turns[1].message_followed is False and ep.turns[0].message_followed is None
    followed = _episode("signal_v0", [_turn(0, "listener_0", "red", colors, inbox=['speaker_0 says: "red"'])], {})
    assert followed.turns[0].message_followed is True
    symbol = _episode("signal_v0", [_turn(0, "listener_0", "red", colors, inbox=['speaker_0 says: "sun"'])], {})
    assert symbol.turns[0].message_followed is None  # a word that names no action is not scored


def test_plan_following_counts_only_steps_that_were_still_legal():
    a, b = "player_1", "player_2"
    rest = lambda *taken: [x for x in BOARD if x not in taken]  # noqa: E731
    turns = [
        _turn(0, a, "5", rest(), plan="9 then 1"),
        _turn(1, b, "1", rest("5"), plan="3"),
        _turn(2, a, "9", rest("5", "1"), plan="1 then 7"),  # followed its plan; now plans "1", already taken
        _turn(3, b, "2", rest("5", "1", "9"), plan="take the corner"),  # played 2 while its planned 3 was legal
        _turn(4, a, "7", rest("5", "1", "9", "2")),
    ]
    ep = _episode("tictactoe_v3", turns, {a: 0.0, b: 0.0})
    assert [t.plan_followed for t in ep.turns] == [True, False, None, None, None]
    (sa, sb) = sorted(summarise([ep]), key=lambda s: s.player)
    assert (sa.plan_following, sa.plans_scored, sb.plan_following, sb.plans_scored) == (1.0, 1, 0.0, 1)
    assert plan_steps("4 then 8, 2 -> 6") == ["4", "8", "2", "6"]


def test_forecast_reading_and_calibration():
    assert read_probabilities("win=60%; draw=30%; loss=10%", ["win", "draw", "loss"]) == pytest.approx(
        {"win": 0.6, "draw": 0.3, "loss": 0.1}
    )
    for bad in ("win=0.6; loss=0.4", "win=0.9; draw=0.9; loss=0.1", "win=1.5; draw=0; loss=0"):
        with pytest.raises(ForecastError):
            read_probabilities(bad, ["win", "draw", "loss"])
    assert brier({"win": 1.0, "loss": 0.0}, "loss") == 2.0
    bins = calibration([(0.05, False), (0.95, True), (0.9, False)], bins=10)
    assert (bins[0].count, bins[0].frequency, bins[9].count, bins[9].frequency) == (1, 0.0, 2, 0.5)


def test_the_parser_reads_a_forecast_line_and_json():
    text = "PLAN: bet\nPREDICT: player_1=fold\nFORECAST: K\nACTION: bet"
    assert parse_turn(text, ["check", "bet"], ["player_1"]).turn.forecast == "K"
    js = '{"action": "bet", "forecast": {"win": 0.7, "loss": 0.3}}'
    assert parse_turn(js, ["check", "bet"]).turn.forecast == "win=0.7; loss=0.3"
    assert parse_turn("ACTION: bet", ["check", "bet"]).turn.forecast is None


def test_grammar_with_a_forecast_accepts_only_its_shape():
    xgr = pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    from llmmarl.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("tiny"))
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    env = make("rps_v2")

    def accepts(grammar, text):
        m = xgr.GrammarMatcher(xgr.GrammarCompiler(info).compile_grammar(grammar))
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return all(m.accept_token(t) for t in ids) and m.accept_token(tok.eos_token_id)

    spec = env.forecast_spec("player_0")
    g = turn_grammar(["rock", "paper"], ["player_1"], MessageRules(), forecast=spec)
    assert accepts(g, "PLAN: x\nPREDICT: player_1=rock\nFORECAST: win=0.5; draw=0.25; loss=0.25\nACTION: rock")
    assert not accepts(g, "PLAN: x\nPREDICT: player_1=rock\nFORECAST: I will win\nACTION: rock")
    kuhn = make("kuhn_poker").forecast_spec("player_0")
    g = turn_grammar(["check", "bet"], [], MessageRules(), forecast=kuhn)
    assert accepts(g, "PLAN: x\nFORECAST: Q\nACTION: bet") and not accepts(g, "PLAN: x\nFORECAST: A\nACTION: bet")
    g = turn_grammar(["check", "bet"], [], MessageRules(), forecast=make("leduc_holdem_v4").forecast_spec("player_0"))
    assert accepts(g, "PLAN: x\nFORECAST: -1.5\nACTION: bet")


def test_runner_asks_for_forecasts_only_when_enabled_and_reads_the_true_card():
    def answer(request):  # a model that answers what it is asked
        forecast = "FORECAST: K\n" if "FORECAST" in request.messages[1]["content"] else ""
        return f"PLAN: 1 then 2\n{forecast}ACTION: {lowest_legal(request)}"

    backend = CannedBackend(answer)
    asker = LLMAgentSpec(name="fc", forecast=True, plan_actions=True)
    quiet = LLMAgentSpec(name="quiet")
    rnd = ScriptedAgentSpec(name="random", policy="random")
    matches = [
        Match(game_id=i, env="kuhn_poker", seats={"player_0": asker, "player_1": rnd}, seed=i) for i in range(6)
    ] + [Match(game_id=6, env="kuhn_poker", seats={"player_0": quiet, "player_1": rnd}, seed=0)]
    episodes = Runner(backend, progress=False).play(matches)
    prompts = {r.messages[1]["content"] for r in backend.requests}
    assert any("FORECAST: <one of: J, Q, K>" in p and "own next actions" in p for p in prompts)
    assert any("FORECAST" not in p for p in prompts)
    for ep in episodes:
        env = make("kuhn_poker")
        env.reset(seed=ep.seed)
        their_card = "JQK"[env.state.history()[1]]
        for t in ep.turns:
            if t.player == "fc":
                assert t.forecast_truth == their_card and t.forecast_score == float(their_card == "K")
            if t.player == "quiet":
                assert t.forecast_score is None and t.forecast_truth is None
    (fc,) = [s for s in summarise(episodes) if s.player == "fc"]
    assert fc.forecasts_scored > 0 and 0.0 <= fc.forecast_skill <= 1.0
