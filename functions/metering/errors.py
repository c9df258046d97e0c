"""Failures of delivery to OGC RS, split by what the caller should do about them."""


class DeliveryError(Exception):
    """Lines could not be delivered now (OGC RS or the auth server down, throttling, timeouts).

    The caller keeps the input for a later try: the SQS message fails, the webhook answers 503.
    """


class ConfigurationError(DeliveryError):
    """The auth server or OGC RS refuses the configured identity or URL; retrying cannot help.

    Still a DeliveryError, so the input is kept (and ends in a dead-letter queue) until an operator fixes it.
    """
