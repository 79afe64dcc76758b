"""What the tests share: oracles, stand-in kernels, argument builders and fixtures. Test files
import from here (`from support import parity`), never from one another."""
