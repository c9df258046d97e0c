"""Failures of delivery to OGC RS, split by what the caller should do about them."""


class DeliveryError(Exception):
    """Lines could not be delivered now (OGC RS or the auth server down, throttling, timeouts).

    The caller keeps the input for a later try: the SQS message fails, the webhook answers 503.
    """


class ConfigurationError(DeliveryError):
    """The auth server or OGC RS refuses the configured identity or URL; retrying cannot help.

    Still a DeliveryError, so the input is kept (and ends in a dead-letter queue) until an operator fixes it.
    """


class RedirectError(ConfigurationError):
    """The auth server or OGC RS answered a redirect (3xx): the configured URL is wrong.

    Never followed: a redirect would carry the client secret or the lines to another host, and its 200 there
    would look like a delivery. The message names the Location host only, never its path or query.
    """
