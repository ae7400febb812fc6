"""The forms behind the app's account pages (frontend/accounts.py): a password account tested
before it is saved, and a mail-file upload checked before it reaches the importer."""

from __future__ import annotations

import re

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from imap.models import Account
from mailgate import request_limits

FORM_OVERHEAD = 64 * 1024  # multipart boundaries, headers and the CSRF token around the files

# A header line ("Name: value") among the first lines: what makes bytes look like a message.
_HEADER_LINE = re.compile(rb"^[!-9;-~]{1,76}:", re.MULTILINE)


class ServerFolders(forms.MultipleChoiceField):
    """Folder names the server listed. The list is only known after the connection test that
    runs once the form is valid, so names are checked against it there (frontend/accounts.py
    _chosen), not against the choices rendered."""

    widget = forms.CheckboxSelectMultiple

    def valid_value(self, value) -> bool:
        return True


class PasswordAccountForm(forms.Form):
    """Server, login and password. The folder choice appears once a connection test has listed
    the server's folders (set_folder_choices)."""

    display_name = forms.CharField(max_length=200, required=False, label="Name",
                                   help_text="Shown in the folder list; the address if left empty.")
    email = forms.EmailField(label="Email address")
    host = forms.CharField(max_length=255, label="IMAP server", help_text="For example imap.example.com")
    security = forms.ChoiceField(choices=Account.Security.choices, initial=Account.Security.SSL,
                                 label="Security")
    port = forms.IntegerField(min_value=1, max_value=65535, required=False, label="Port",
                              help_text="Empty: 993 with SSL/TLS, 143 otherwise.")
    username = forms.CharField(max_length=255, required=False, label="User name",
                               help_text="Empty: the email address.")
    # Rendered back only into the same user's page after a test, so "Save" needs no retyping;
    # never rendered from the database (editing keeps the stored one when left empty).
    password = forms.CharField(strip=False, required=False, label="Password",
                               widget=forms.PasswordInput(render_value=True, attrs={"autocomplete": "new-password"}))
    folders = ServerFolders(required=False, label="Folders to sync")

    def __init__(self, *args, account: Account | None = None, **kwargs):
        self.account = account
        if account is not None:
            kwargs.setdefault("initial", {
                "display_name": account.display_name, "email": account.email, "host": account.host,
                "security": account.security, "port": account.port, "username": account.username,
                "folders": list(account.folders_include)})
        super().__init__(*args, **kwargs)
        self.fields["password"].help_text = ("Leave empty to keep the stored password." if account
                                             else "Stored encrypted; never shown again.")

    def set_folder_choices(self, names: list[str]) -> None:
        self.fields["folders"].choices = [(name, name) for name in names]

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("password") and (self.account is None or not self.account.password_encrypted):
            self.add_error("password", "Enter the mailbox password.")
        return cleaned

    def connection_values(self) -> dict:
        data = self.cleaned_data
        security = data["security"]
        return {
            "email": data["email"], "host": data["host"].strip(), "security": security,
            "port": data.get("port") or (993 if security == Account.Security.SSL else 143),
            "username": data.get("username") or data["email"],
            "display_name": data.get("display_name") or data["email"],
        }


class DisplayForm(forms.Form):
    """What an OAuth2 account lets its owner edit here: the name and the folders."""

    display_name = forms.CharField(max_length=200, label="Name")
    folders = ServerFolders(required=False, label="Folders to sync")

    def set_folder_choices(self, names: list[str]) -> None:
        self.fields["folders"].choices = [(name, name) for name in names]


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFiles(forms.FileField):
    """Several files in one field (Django's documented pattern): a list of uploads."""

    widget = MultipleFileInput

    def clean(self, data, initial=None):
        if isinstance(data, (list, tuple)):
            return [super(MultipleFiles, self).clean(item, initial) for item in data]
        return [super().clean(data, initial)] if data else []


class ImportForm(forms.Form):
    """.eml and .mbox files for imap/importer.py, with a size cap for the whole upload."""

    # Empty files are refused by check_mail_file, with their name.
    files = MultipleFiles(label="Mail files (.eml, .mbox)", required=False, allow_empty_file=True)

    def clean_files(self):
        uploads = self.cleaned_data.get("files") or []
        if not uploads:
            raise ValidationError("Choose at least one .eml or .mbox file.")
        cap = import_cap()
        if sum(upload.size for upload in uploads) > cap:
            raise ValidationError(f"The upload is larger than the limit of {megabytes(cap)}; "
                                  "split the mailbox or use `manage.py import_mail` on the server.")
        for upload in uploads:
            check_mail_file(upload)
        return uploads


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB".replace(".0 MB", " MB")


def import_cap() -> int:
    """The largest upload, all files together: MAILGATE_IMPORT_MAX_BYTES, but never more than the
    web server lets through at all (mailgate/request_limits.py cuts any body past
    MAILGATE_MAX_REQUEST_BYTES before Django sees it), less room for the form's other parts."""
    return min(settings.MAILGATE_IMPORT_MAX_BYTES, request_limits.max_request_bytes() - FORM_OVERHEAD)


def check_mail_file(upload) -> None:
    """Refuse, with the file's name, what is clearly not an .eml or an mbox file."""
    name = upload.name or "file"
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in ("eml", "mbox", "mbx"):
        raise ValidationError(f"{name}: only .eml and .mbox files can be imported.")
    if upload.size == 0:
        raise ValidationError(f"{name}: the file is empty.")
    upload.seek(0)
    head = upload.read(4096)
    upload.seek(0)
    if b"\x00" in head:
        raise ValidationError(f"{name}: this is a binary file, not mail.")
    if suffix == "eml":
        if head.startswith(b"From "):
            raise ValidationError(f"{name}: this looks like an mbox file; name it .mbox.")
        if not _HEADER_LINE.search(head.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]):
            raise ValidationError(f"{name}: no mail headers found (is it really a message?).")
    elif not head.startswith(b"From "):
        raise ValidationError(f'{name}: not an mbox file (an mbox starts with a "From " line).')
