"""Admin form fields for the JSON columns people edit: a list as one item per line (folders,
subscriber addresses) and a settings dict as key/value rows (a service's config). The stored
format stays what it was (a JSON list, a JSON object); only the editing changes, and every bad
row gets an error that names it."""

from __future__ import annotations

import json

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join


class LinesWidget(forms.Textarea):
    """A list shown one item per line."""

    def __init__(self, attrs=None):
        super().__init__({"rows": 4, "cols": 50, **(attrs or {})})

    def format_value(self, value):
        if isinstance(value, str):
            try:
                value = json.loads(value)  # a bound JSONField value arrives as JSON text
            except ValueError:
                return value
        if isinstance(value, (list, tuple)):
            return "\n".join(str(item) for item in value)
        return "" if value is None else str(value)


class LinesField(forms.Field):
    """One item per line -> a list of strings (blank lines dropped, duplicates kept once).

    `item_validator(text)` returns an error text for a bad item, or None.
    """

    widget = LinesWidget

    def __init__(self, *, item_validator=None, max_items=500, max_length=500, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.item_validator = item_validator
        self.max_items = max_items
        self.max_length = max_length

    def to_python(self, value):
        if isinstance(value, (list, tuple)):
            lines = [str(v) for v in value]
        else:
            lines = (value or "").splitlines()
        return list(dict.fromkeys(line.strip() for line in lines if line.strip()))

    def validate(self, value):
        super().validate(value)
        errors = []
        if len(value) > self.max_items:
            errors.append(f"At most {self.max_items} lines.")
        for number, item in enumerate(value, 1):
            if len(item) > self.max_length:
                errors.append(f"Line {number} is longer than {self.max_length} characters.")
            elif self.item_validator and (problem := self.item_validator(item)):
                errors.append(f"Line {number} ({item}): {problem}")
        if errors:
            raise ValidationError(errors)

    def prepare_value(self, value):
        return value

    def has_changed(self, initial, data):
        return (initial or []) != self.to_python(data)


def parse_setting(text: str):
    """A value as typed: a JSON number, true/false/null, or a "quoted" JSON string or list/object,
    else the text itself. So 587 is stored as a number and {subject} stays text."""
    stripped = text.strip()
    if not stripped:
        return ""
    try:
        return json.loads(stripped)
    except ValueError:
        return text


def show_setting(value) -> str:
    """The inverse of parse_setting: text that reads back to the same value."""
    if isinstance(value, str):
        return json.dumps(value) if parse_setting(value) != value else value
    return json.dumps(value)


class SettingsWidget(forms.Widget):
    """Key/value rows for a JSON object, and empty rows to add more. `known_keys` (kind -> keys)
    fills the key suggestions; admin JS narrows them to the selected kind."""

    blank_rows = 3

    def __init__(self, attrs=None, known_keys=None):
        super().__init__(attrs)
        self.known_keys = known_keys or {}

    def format_value(self, value):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return {}
        return value if isinstance(value, dict) else {}

    def value_from_datadict(self, data, files, name):
        keys = data.getlist(f"{name}-key") if hasattr(data, "getlist") else data.get(f"{name}-key", [])
        values = data.getlist(f"{name}-value") if hasattr(data, "getlist") else data.get(f"{name}-value", [])
        if not keys and not values and name in data:  # a plain JSON text (API clients, old forms)
            return data[name]
        return list(zip(keys, values))

    def value_omitted_from_data(self, data, files, name):
        return f"{name}-key" not in data and name not in data

    def render(self, name, value, attrs=None, renderer=None):
        if isinstance(value, list):  # rows as typed, shown again with their errors
            rows = [(key, text) for key, text in value if key.strip() or text.strip()]
        else:
            rows = [(key, show_setting(val)) for key, val in self.format_value(value).items()]
        rows += [("", "")] * self.blank_rows
        list_id = f"{name}-keys"
        all_keys = sorted({key for keys in self.known_keys.values() for key in keys})
        body = format_html_join("", (
            '<tr><td><input type="text" name="{0}-key" value="{1}" list="{2}" aria-label="Setting name" '
            'class="vTextField settings-key"></td><td><textarea name="{0}-value" rows="1" cols="40" '
            'aria-label="Value" class="settings-value">{3}</textarea></td></tr>'),
            ((name, key, list_id, text) for key, text in rows))
        options = format_html_join("", '<option value="{}">', ((k,) for k in all_keys))
        return format_html(
            '<table class="settings-widget" id="{}" data-known-keys="{}"><thead><tr><th>Setting</th><th>Value</th>'
            '</tr></thead><tbody>{}</tbody></table><datalist id="{}">{}</datalist>',
            (attrs or {}).get("id", f"id_{name}"), json.dumps(self.known_keys), body, list_id, options)


class SettingsField(forms.Field):
    """Key/value rows -> a dict (stored as the JSON object it always was)."""

    widget = SettingsWidget

    def __init__(self, *, known_keys=None, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)
        self.widget.known_keys = known_keys or {}

    def to_python(self, value):
        if isinstance(value, dict):
            return value
        if isinstance(value, str):  # JSON text
            if not value.strip():
                return {}
            try:
                parsed = json.loads(value)
            except ValueError as exc:
                raise ValidationError(f"Not valid JSON: {exc}") from None
            if not isinstance(parsed, dict):
                raise ValidationError("Settings must be name/value pairs (a JSON object).")
            return parsed
        result, errors = {}, []
        for number, (key, text) in enumerate(value or [], 1):
            key = key.strip()
            if not key and not text.strip():
                continue
            if not key:
                errors.append(f"Row {number}: a value needs a setting name.")
            elif key in result:
                errors.append(f"Row {number}: “{key}” is given twice.")
            else:
                result[key] = parse_setting(text)
        if errors:
            raise ValidationError(errors)
        return result

    def has_changed(self, initial, data):
        try:
            return (initial or {}) != self.to_python(data)
        except ValidationError:
            return True
