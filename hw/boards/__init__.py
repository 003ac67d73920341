"""Board tops (iCEBreaker, ULX3S 85F, OrangeCrab 25F), their clocking and the UART bridge."""

from .boards import BOARDS, Board, BoardTop, get_board
from .bridge import UARTBridge

__all__ = ["BOARDS", "Board", "BoardTop", "UARTBridge", "get_board"]
