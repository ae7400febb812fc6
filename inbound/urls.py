from django.urls import path

from inbound import views

app_name = "inbound"
urlpatterns = [
    path("<str:kind>/<str:token>/", views.hook, name="hook"),
]
