"""Credentials inside URIs never reach the screen: the password and secret query values are
masked, what identifies the place (scheme, user, host, port, path) is kept."""

import pytest

from cv_assets.lib.core.secrets import MASK, mask_secrets_in, mask_uri, uri_secrets

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        (
            "postgresql://user:s3cret@127.0.0.1:5432/mlflow",
            "postgresql://user:***@127.0.0.1:5432/mlflow",
        ),
        ("http://user:s3cret@127.0.0.1:5000", "http://user:***@127.0.0.1:5000"),
        ("https://:s3cret@mlflow.example.com/", "https://:***@mlflow.example.com/"),
        (
            "postgresql+psycopg2://mlflow:p%40ss%2Fw@db:5432/mlflow?sslmode=require",
            "postgresql+psycopg2://mlflow:***@db:5432/mlflow?sslmode=require",
        ),
        # A raw "/", "?", "#" or "@" in a password: masked whole, never shown as a "path".
        ("postgresql://user:ab/cd@host/db", "postgresql://user:***@host/db"),
        ("mysql://u:p?w#d@h@host:3306/db", "mysql://u:***@host:3306/db"),
        (
            "s3://AKIAEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCY@bucket/prefix",
            "s3://AKIAEXAMPLE:***@bucket/prefix",
        ),
        (
            "postgresql://db:5432/mlflow?user=mlflow&password=s3cret&sslmode=require",
            "postgresql://db:5432/mlflow?user=mlflow&password=***&sslmode=require",
        ),
        ("http://mlflow:5000/api?token=t0k3n&x=1", "http://mlflow:5000/api?token=***&x=1"),
        (
            "http://mlflow:5000/?api_key=k3y;ACCESS_TOKEN=abc",
            "http://mlflow:5000/?api_key=***;ACCESS_TOKEN=***",
        ),
        (
            "https://b.s3.amazonaws.com/k.onnx?X-Amz-Credential=AKIA%2F20240101"
            "&X-Amz-Signature=9f86d0&X-Amz-Expires=3600",
            "https://b.s3.amazonaws.com/k.onnx?X-Amz-Credential=***"
            "&X-Amz-Signature=***&X-Amz-Expires=3600",
        ),
    ],
)
def test_credentials_in_a_uri_are_masked_and_the_place_is_kept(uri, masked):
    assert mask_uri(uri) == masked
    assert mask_uri(masked) == masked  # masking twice changes nothing


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////home/me/.cv_assets/mlflow.db",
        "http://127.0.0.1:5000",
        "https://user@mlflow.example.com/",  # a user name alone opens nothing
        "http://user:@127.0.0.1:5000",  # an empty password hides nothing
        "file:///tmp/mlruns",
        "s3://bucket/prefix/artifacts",
        "databricks://profile:prefix",
        "/plain/local/path",
    ],
)
def test_a_uri_without_credentials_is_unchanged(uri):
    assert mask_uri(uri) == uri
    assert uri_secrets(uri) == []


def test_the_secrets_of_a_uri_include_their_decoded_form():
    uri = "postgresql://mlflow:p%40ss%2Fword@db/mlflow?token=abcd1234"
    assert set(uri_secrets(uri)) == {"p%40ss%2Fword", "p@ss/word", "abcd1234"}


def test_text_is_masked_wherever_it_carries_a_configured_secret():
    uri = "http://user:s3cret-pw@127.0.0.1:9"
    # As MLflow words it: the URL with its password, then the password alone, decoded.
    text = (
        f"API request to {uri}/api/2.0/mlflow/experiments/get failed; "
        "login with password s3cret-pw refused"
    )
    got = mask_secrets_in(text, [uri, None, ""])
    assert "s3cret" not in got
    assert "http://user:***@127.0.0.1:9/api/2.0/mlflow/experiments/get" in got
    assert f"password {MASK} refused" in got


def test_text_is_masked_for_any_uri_it_holds_even_unconfigured_ones():
    text = "could not open s3://AKIA:wJalr/K7+x@bucket/key ('postgresql://u:pw@db/m')"
    got = mask_secrets_in(text)
    assert got == "could not open s3://AKIA:***@bucket/key ('postgresql://u:***@db/m')"


def test_short_secrets_are_masked_inside_uris_but_not_everywhere_in_the_text():
    # Replacing "pw" everywhere would mangle words; inside the URI it is still masked.
    got = mask_secrets_in("upwards: postgresql://u:pw@db/m", ["postgresql://u:pw@db/m"])
    assert got == "upwards: postgresql://u:***@db/m"
