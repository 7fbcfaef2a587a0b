"""Hiding secrets in text shown or saved, on both sides (standard library only).

A secret is masked where it stands as a whole: not as a piece of a longer word (a one-letter
password must not turn "project" into "***roject", which mangles the message and gives the
password away). Its URL-encoded form is masked too, since connection URLs carry it so.
"""
import re
from urllib.parse import quote, quote_plus, urlsplit, urlunsplit

MASK = "***"
WORD = r"[A-Za-z0-9]"


def forms(secret):
    """The secret as written and as URL encodings of it would carry it."""
    return {secret, quote(secret, safe=""), quote_plus(secret, safe="")}


def scrub(text, secrets):
    """`text` with every whole occurrence of each secret (longest first) replaced by ***."""
    text = str(text)
    for value in sorted({f for s in secrets if s for f in forms(str(s))}, key=len, reverse=True):
        # Where the secret begins or ends with a letter or digit, a neighbour of that kind
        # means it is only part of a longer word there.
        before = f"(?<!{WORD})" if re.match(WORD, value[0]) else ""
        after = f"(?!{WORD})" if re.match(WORD, value[-1]) else ""
        text = re.sub(before + re.escape(value) + after, MASK, text)
    return text


def masked_url(url):
    """The URL with the password of its user part (if any) hidden: what output and journals keep."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{MASK}@{parts.netloc.rsplit('@', 1)[1]}"))
