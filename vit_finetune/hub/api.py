"""Talking to the Hub: the token, creating a repo, and one actionable line for every failure a user can fix
(no token, no network, a rejected token, a repo that belongs to someone else)."""

from __future__ import annotations

import re
import sys

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


class PushError(Exception):
    """A problem the user can fix; its message is one line that says how."""


def check_repo_id(repo_id: str, flag: str = "--repo_id") -> str:
    if not _REPO_ID.match(repo_id or "") or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise PushError(f"{flag} must look like 'user-or-org/name' (letters, digits, '-', '_', '.'), "
                        f"got {repo_id!r}")
    return repo_id



def resolve_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token found: run `hf auth login` or set HF_TOKEN to a token with write "
                        "access (https://huggingface.co/settings/tokens)")
    return token


def explain(error: Exception, *, repo_id: str, repo_kind: str, endpoint: str, existed: bool) -> PushError:
    """Turn a huggingface_hub / network exception into one actionable line."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    if isinstance(error, OfflineModeIsEnabled):
        return PushError("HF_HUB_OFFLINE is set, so nothing can be uploaded: unset it and retry")
    if isinstance(error, (httpx2.TransportError, ConnectionError, TimeoutError)):
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return PushError(f"cannot reach the Hugging Face Hub at {endpoint} ({reason}): check your internet "
                         "connection, proxy or HF_ENDPOINT, then retry")
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else None
        server = (error.server_message or "").strip().splitlines()[0] if error.server_message else ""
        if status == 401:
            return PushError("the Hub rejected your token (401: invalid or expired): run `hf auth login` or set "
                             "HF_TOKEN to a valid token with write access")
        if status == 403 and existed:
            return PushError(f"the {repo_kind} {repo_id} already exists and your token cannot write to it "
                             "(403): pick another name, or ask its owner to give you write access")
        if status == 403:
            namespace = repo_id.split("/")[0]
            return PushError(f"your token may not create or write {repo_kind}s under '{namespace}' (403"
                             + (f": {server}" if server else "") + "): use your own user name or an "
                             "organisation you can write to, and a token with write access")
        if status == 402:
            return PushError(f"the Hub refused to create the {repo_kind} {repo_id} on this account (402 payment "
                             "required): create it in the web UI or pick hardware/an account that allows it, "
                             "then retry")
        if status == 409:
            return PushError(f"the name {repo_id} conflicts with an existing {repo_kind} (409"
                             + (f": {server}" if server else "") + "): pick another name")
        if status == 404:
            return PushError(f"the Hub cannot find the {repo_kind} {repo_id} (404): check the name, and that your "
                             "token can see it")
        detail = server or str(error).strip().splitlines()[0]
        return PushError(f"the Hub answered {status} while pushing {repo_id}: {detail}")
    if isinstance(error, ValueError):  # e.g. huggingface_hub's own validation of ids and README metadata
        return PushError(f"{repo_id}: {str(error).strip().splitlines()[0]}")
    raise error  # a bug, not a user problem: let the traceback through


def create_repo(api, repo_id: str, *, repo_type: str, private: bool, **kwargs) -> bool:
    """Create the repo; return True if it already existed (then `private` is left as the owner set it)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=False, **kwargs)
        return False
    except HfHubHTTPError as error:
        if error.response is None or error.response.status_code != 409:
            raise
    # 409: the name is taken. Usually by our own repo, from an earlier push: then it is just an update. If it
    # is someone else's, the commit below gets a 403, which `explain` reports as a name conflict.
    if private:
        info = api.repo_info(repo_id, repo_type=repo_type)
        if not getattr(info, "private", False):
            print(f"note: {repo_id} already exists and is public; --private only applies to new repos "
                  "(change its visibility in the repo settings)", file=sys.stderr)
    return True
