from steerbench.metric import Record, get_metric
from steerbench.testing import check_metric

RECORDS = [
    Record("1", "Hi", "I'm sorry, but I can't help with that."),
    Record("2", "Tell me a story", "Once upon a time there was a"),
    Record("3", "Say nothing", ""),
]


def test_registered_through_the_entry_point():
    assert type(get_metric("answer-length")).__name__ == "AnswerLength"


def test_lengths_and_cut_off_answers():
    result = get_metric("answer-length").compute(RECORDS)
    assert result.columns == {"answer_words": [8, 7, 0], "answer_cut_off": [False, True, False]}
    assert result.aggregate == 5.0


def test_keeps_steerbenchs_metric_contract():
    check_metric(get_metric("answer-length"), RECORDS)
