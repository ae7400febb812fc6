"""The admin's list and settings fields (mailgate/admin_widgets.py): what is typed is stored in the
format the JSON columns always had, shown back the same way, and bad rows are named."""

import pytest
from django.core.exceptions import ValidationError
from django.http import QueryDict

from mailgate.admin_widgets import LinesField, SettingsField, SettingsWidget, parse_setting, show_setting


def test_lines_become_a_list_without_blanks_or_repeats():
    field = LinesField()
    assert field.clean("INBOX\n\n  Lists/*  \nINBOX\n") == ["INBOX", "Lists/*"]
    assert field.clean("") == []
    assert field.widget.format_value(["INBOX", "Archive"]) == "INBOX\nArchive"
    assert field.widget.format_value('["INBOX"]') == "INBOX"


def test_a_bad_line_is_named_with_its_number():
    field = LinesField(item_validator=lambda text: "no spaces" if " " in text else None)
    with pytest.raises(ValidationError) as error:
        field.clean("ok@example.test\nnot ok")
    assert error.value.messages == ["Line 2 (not ok): no spaces"]


@pytest.mark.parametrize("text, value", [
    ("587", 587), ("true", True), ("-1001234", -1001234), ("{subject}", "{subject}"), ("hello", "hello"),
    ('"587"', "587"), ("", ""), ('["a", "b"]', ["a", "b"]),
])
def test_settings_values_read_as_json_when_they_are_json_else_as_text(text, value):
    assert parse_setting(text) == value
    assert parse_setting(show_setting(value)) == value


def test_settings_rows_become_a_dict_and_mistakes_are_named():
    field = SettingsField()
    data = QueryDict(mutable=True)
    data.setlist("config-key", ["host", "port", "", ""])
    data.setlist("config-value", ["smtp.example.test", "587", "", ""])
    rows = SettingsWidget().value_from_datadict(data, {}, "config")
    assert field.clean(rows) == {"host": "smtp.example.test", "port": 587}
    with pytest.raises(ValidationError) as error:
        field.clean([("host", "a"), ("host", "b"), ("", "orphan")])
    assert error.value.messages == ["Row 2: “host” is given twice.", "Row 3: a value needs a setting name."]
    # JSON text still works (API clients and tests post it).
    assert field.clean('{"chat_id": 5}') == {"chat_id": 5}
    with pytest.raises(ValidationError):
        field.clean("[1, 2]")


def test_settings_render_as_rows_with_blank_ones_to_add():
    html = SettingsWidget(known_keys={"smtp": ["host"]}).render("config", {"host": "mail", "port": 25})
    assert html.count('name="config-key"') == 5
    assert 'value="host"' in html and ">25</textarea>" in html
