"""The consent form: what the person grants an OAuth client."""
from __future__ import annotations

from django import forms
from oauth2_provider.forms import AllowForm

from oauth.services import CONSENT_EXPIRY_DAYS
from risk.models import ALL_SCOPES


class ConsentForm(AllowForm):
    """django-oauth-toolkit's ``AllowForm`` (the authorization request in hidden fields) plus the
    person's choices: ``granted_scopes`` (a subset of the requested ``scope``), ``accounts`` (none:
    every account of theirs), ``symbols`` (space/comma separated; empty: all), ``confirm_orders``
    and ``expires_days`` (empty: never). After ``clean`` the ``scope`` field holds the granted
    scopes, which is what the authorization code and its tokens carry."""

    granted_scopes = forms.MultipleChoiceField(choices=[(s, s) for s in ALL_SCOPES], required=False,
                                               widget=forms.CheckboxSelectMultiple)
    accounts = forms.TypedMultipleChoiceField(coerce=int, required=False, widget=forms.CheckboxSelectMultiple)
    symbols = forms.CharField(required=False, max_length=500)
    confirm_orders = forms.BooleanField(required=False)
    expires_days = forms.TypedChoiceField(coerce=int, empty_value=None, required=False,
                                          choices=[("", "never")] + [(d, f"{d} days") for d in CONSENT_EXPIRY_DAYS])

    def __init__(self, *args, accounts=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["accounts"].choices = [(a.pk, f"{a.name} (#{a.pk})") for a in accounts]

    def clean(self):
        data = super().clean()
        requested = (data.get("scope") or "").split()
        if data.get("allow"):
            granted = data.get("granted_scopes") or []
            beyond = [s for s in granted if s not in requested]
            if beyond:
                raise forms.ValidationError(f"The client did not ask for {', '.join(beyond)}.")
            if not granted:
                raise forms.ValidationError("Grant at least one of the scopes the client asked for, or deny.")
            data["scope"] = " ".join(s for s in ALL_SCOPES if s in granted)
        data["symbol_list"] = [s.strip().upper() for s in (data.get("symbols") or "").replace(",", " ").split() if s.strip()]
        return data
