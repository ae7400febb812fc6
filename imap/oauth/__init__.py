"""OAuth2 sign-in for IMAP accounts (Gmail, Microsoft 365, any standards-compliant provider).

  * providers/: one small class per provider over a base and a registry, configured by settings.
  * http.py: the stdlib HTTP session Authlib's client talks through.
  * tokens.py: a valid access token for an account, refreshed by one process at a time.
  * sasl.py: the XOAUTH2 / OAUTHBEARER strings and what a refusal means.
  * flow.py: the authorization-code flow with PKCE behind "Connect with ..." and Reconnect.
"""
