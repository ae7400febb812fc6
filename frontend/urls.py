from django.urls import path

from frontend import accounts, api, reader, views

app_name = "frontend"
urlpatterns = [
    # Pages
    path("", views.inbox, name="home"),
    path("inbox/", views.inbox, name="inbox"),
    path("messages/<uuid:message_id>/", views.message, name="message"),
    path("messages/<uuid:message_id>/body/", views.message_body, name="message_body"),
    # Only the prefix of message_inline, for the body frame's CSP (answers 404 on its own).
    path("messages/<uuid:message_id>/inline/", views.inline_base, name="message_inline_base"),
    path("messages/<uuid:message_id>/inline/<str:token>/", views.message_inline, name="message_inline"),
    path("attachments/<uuid:attachment_id>/", views.attachment, name="attachment"),
    # The reader (frontend/reader.py): original source, .eml, image previews, attached messages.
    path("messages/<uuid:message_id>/source/", reader.message_raw, name="message_raw"),
    path("messages/<uuid:message_id>/eml/", reader.message_eml, name="message_eml"),
    path("attachments/<uuid:attachment_id>/preview/", reader.attachment_preview, name="attachment_preview"),
    path("attachments/<uuid:attachment_id>/message/", reader.attached_message, name="attached_message"),
    path("attachments/<uuid:attachment_id>/message/body/", views.attached_message_body, name="attached_message_body"),
    path("pipeline/", views.pipeline, name="pipeline"),
    # Account setup (frontend/accounts.py); "accounts/" is Django's login and logout.
    path("mail-accounts/", accounts.index, name="accounts"),
    path("mail-accounts/add/", accounts.add, name="account_add"),
    path("mail-accounts/connect/<str:provider>/", accounts.connect, name="account_connect"),
    path("mail-accounts/<int:account_id>/edit/", accounts.edit, name="account_edit"),
    path("mail-accounts/<int:account_id>/sync/", accounts.sync_now, name="account_sync"),
    path("mail-accounts/<int:account_id>/import/", accounts.upload, name="account_import"),
    path("mail-accounts/<int:account_id>/delete/", accounts.delete, name="account_delete"),
    # Browsers ask for /favicon.ico on every page without a <link rel=icon> (the admin's too).
    path("favicon.ico", views.favicon, name="favicon"),
    # JSON API (docs/api.md)
    path("api/messages/", api.messages, name="api_messages"),
    path("api/messages/batch/", api.batch, name="api_batch"),
    path("api/messages/counts/", api.message_counts, name="api_message_counts"),
    path("api/folders/", api.folders, name="api_folders"),
    path("api/messages/<uuid:message_id>/", api.message_detail, name="api_message"),
    path("api/messages/<uuid:message_id>/thread/", api.message_thread, name="api_thread"),
    path("api/messages/<uuid:message_id>/events/", api.message_events, name="api_message_events"),
    path("api/messages/<uuid:message_id>/related/", api.message_related, name="api_message_related"),
    path("api/accounts/", api.accounts, name="api_accounts"),
    path("api/accounts/<int:account_id>/", api.account_detail, name="api_account"),
    path("api/deliveries/", api.deliveries, name="api_deliveries"),
    path("api/deliveries/<uuid:delivery_id>/retry/", api.delivery_retry, name="api_delivery_retry"),
    path("api/stats/", api.stats, name="api_stats"),
    path("api/throughput/", api.throughput_view, name="api_throughput"),
    path("api/seq/", api.seq, name="api_seq"),
]
