app_name = "imap"
urlpatterns = []
