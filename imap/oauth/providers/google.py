from imap.oauth.providers.base import Provider


class Google(Provider):
    """Gmail and Google Workspace. Scope https://mail.google.com/ is the only one IMAP accepts."""

    key = "google"
    label = "Google"
    authorize_url = "https://accounts.google.com/o/oauth2/v2/auth"
    token_url = "https://oauth2.googleapis.com/token"
    revoke_url = "https://oauth2.googleapis.com/revoke"
    scopes = ("https://mail.google.com/", "openid", "email")
    imap_host = "imap.gmail.com"
    # Without access_type=offline Google returns no refresh token; prompt=consent makes it return
    # one again on Reconnect (it otherwise only does on the very first consent).
    authorize_params = {"access_type": "offline", "prompt": "consent"}
