"""TLS for the SMTP listeners: the generated certificate set and the reloading server context.

:mod:`.certs` makes a local CA and a server certificate when none is configured;
:mod:`.context` builds the ``SSLContext`` (TLS 1.2+) and reloads it when the files
change. The SMTP side (:mod:`buzon.smtp.starttls`) asks :meth:`ServerTls.current`
for the context each time a client starts TLS.
"""

from buzon.tls.certs import GeneratedFiles, ensure_generated, generate, needs_renewal
from buzon.tls.context import Loaded, ServerTls, TlsError, load_pair

__all__ = [
    "GeneratedFiles",
    "Loaded",
    "ServerTls",
    "TlsError",
    "ensure_generated",
    "generate",
    "load_pair",
    "needs_renewal",
]
