"""The accelerator core: load parser, token input, sequencer, PE array, drain, max-pool OR.

`Accelerator(config)` runs a program compiled by `hw/compiler.py` (instruction set in
`hw/isa.py`) on each input arriving on `tokens` and sends its results on `results`.

Data path of an array pass (one reduction step per cycle, two pipeline stages and a drain):

    stage 1  the loop state of one step (group > row group > column tile > step > tap counters,
             the tile's stream addresses, the tap offsets) and its word from the step memory
             -> activation run-read addresses (port A: columns, port B: rows, or a paired
             step's second operand run), weight address; column masks (grid end, 3x3 zero
             padding) and edge reads (a 3x3 window crossing into the next lane group's band
             reads the word `band` away). The next step's word is read as this one moves on,
             so no pipeline register copies the loop state.
    stage 2  bank rotation, edge lane shifts (both runs), row-operand lane-group rotation
             (attention across bands), lane masks; the PE array registers the operands and
             each row's shifted, negated weight terms
    stage 3  PE array accumulate (a select and an adder per lane); a tile's last step loads
             the shadow (or, single-buffered, leaves the sums for the drain)
    drain    issues one row (all columns) per cycle, or one bit-plane per cycle for raw integer
             outputs, or a row's sum for the head; the row's parameters are registered, the
             row passes the `pe_cols` LIF units' pipeline stages (`lif_stage_lanes`) and is
             written as one run of `pe_cols` words, while the next tile accumulates; the
             head's row sums pass a registered adder tree into the running logits

A max-pool pass runs the same loops and reads; stage 2 ORs the 3x3/2 windows instead of
accumulating and writes each chunk's outputs as one run (`isa.OP_MAXPOOL`).

Activation memory: `pe_cols` banks of `lanes`-bit words interleaved by address; a run of
`pe_cols` consecutive words at any address is read or written in one cycle. A word holds
`pack = lanes / T` lane groups (other positions of the same channel) when T < lanes, so the
spare lanes do useful work; the LIF units restart the membrane at each group's first lane.
Without `ArrayConfig.lane_packing` a word holds one group and the edge-read and rotation logic
is not built; without `ArrayConfig.paired_steps` the second operand path is not built; without
`ArrayConfig.double_buffer` the drain reads the working accumulators and a tile's first step
waits for it.

Loading: every record is checked as it arrives: malformed -> BAD_RECORD; an address beyond a
memory, or a global/descriptor field outside `isa.field_limits` (T above the lanes, a base
beyond a memory, ...), or a paired step on an array without paired steps -> DOES_NOT_FIT; the
commit of such a program is refused. A descriptor is `isa.desc_words()` program words of
`isa.FIELDS_PER_WORD` fields, read one word per cycle when its pass starts.

The weight, parameter and step memories have one address each, shared by the loader's writes
and the passes' reads (which never overlap), so an iCE40 can hold them in single-port SPRAM.

Latency: `pysim.cycles.cycle_report` gives the cycles of an inference exactly (busy cycles).
Throughput: `pe_rows * pe_cols * lanes` AND/accumulate lane operations per cycle on conv and
linear layers; max-pool: `(pe_cols - 1) // 2` output words per 3 cycles (a run read per
input row of the 3x3/2 windows).
Cost: the PE array (see `hw/pe.py`), `pe_cols` LIF units, `pe_cols` activation banks with two
read ports each, weight/parameter/step/program/input memories; no multipliers. Measured
figures per board and configuration are in the README (`make synth`, `make explore`).
"""

from amaranth import Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, enum, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import isa
from .actmem import ActivationMemory
from .config import ArrayConfig
from .drain import Drain
from .dump import TraceDump
from .load import VERDICT_CYCLES, LoadParser, step_layout
from .operands import MaxPoolOr, OperandFetch
from .pe import PeArray
from .sequencer import LoopSequencer, StepIssue
from .streams import BYTE_STREAM, StreamRegister
from .tokens import TokenInput
from .unpack import InputUnpacker

#: The core's status output (also read by the host link).
STATUS_LAYOUT = data.StructLayout({"ready": 1, "busy": 1, "error": 8})


class PassState(enum.Enum, shape=4):
    """The pass controller's states (`_Core._controller`)."""
    IDLE = 0  #: waiting for a loaded program and an input
    UNPACK = 1  #: the input's pixels become bit-planes in the activation memory
    DESC = 2  #: the next descriptor's first program word is read
    DESC_LATCH = 3  #: its words are latched, one per cycle
    START = 4  #: the loop sequencer starts the pass
    ARRAY = 5  #: steps run until the pipeline is empty
    PASS_END = 6  #: a traced pass's outputs are dumped, or the next pass begins
    DUMP = 7  #: the trace dump sends the pass's outputs
    FINISH = 8  #: the inference is over


#: At most this many clock edges after `load` accepts a record's last byte, `status` shows its
#: verdict (`ready` after a commit, `error` after a failing byte): one in the load register,
#: up to one waiting for the parser's bubble after the byte before, then the parser's own
#: `VERDICT_CYCLES`. An input's `loaded` check comes at its own last byte, so tokens may
#: follow a load at once.
LOAD_VERDICT_CYCLES = 2 + VERDICT_CYCLES


class Accelerator(wiring.Component):
    """The accelerator core.

    Ports: `load` (load image: whole records per chunk, `last` on a chunk's final byte),
    `tokens` (per input: flags byte, bit 0 = trace, then C*H*W pixel bytes, `last` on the final
    byte), `results` (per input: with trace every layer's output words, then the logits as
    little-endian int32; `last` on the final byte), `status` and `clear` (a pulse: clears the
    error, forgets the program, aborts the current input).

    Errors: a malformed record -> BAD_RECORD, an address beyond a memory -> DOES_NOT_FIT (the
    rest of the chunk is dropped; a later commit is refused); an input of the wrong length ->
    BAD_INPUT; an input before a committed program -> NOT_LOADED (the input is dropped).
    """

    def __init__(self, config: ArrayConfig):
        self.config = config
        super().__init__({
            "load": In(BYTE_STREAM),
            "tokens": In(BYTE_STREAM),
            "results": Out(BYTE_STREAM),
            "status": Out(STATUS_LAYOUT),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        core = self._core = _Core(self.config)
        m.submodules.core = ResetInserter({"sync": self.clear})(core)
        wiring.connect(m, wiring.flipped(self.load), core.load)
        wiring.connect(m, wiring.flipped(self.tokens), core.tokens)
        wiring.connect(m, core.results, wiring.flipped(self.results))
        m.d.comb += self.status.eq(core.status)
        return m


class _Core(wiring.Component):
    """The core's blocks and their wiring, and the pass controller: per input, unpack the
    pixels, then per pass latch its descriptor, run the array (or max-pool) loops until the
    pipeline and the drain are empty, and dump the pass's outputs when the input is traced."""

    def __init__(self, config: ArrayConfig):
        self.config = config
        super().__init__({
            "load": In(BYTE_STREAM),
            "tokens": In(BYTE_STREAM),
            "results": Out(BYTE_STREAM),
            "status": Out(STATUS_LAYOUT),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        m.submodules.loader = loader = LoadParser(cfg)
        m.submodules.tokens = tin = TokenInput(cfg)
        m.submodules.unpack = unpack = InputUnpacker(cfg)
        m.submodules.act = act = ActivationMemory(cfg)
        m.submodules.loops = loops = LoopSequencer(cfg)
        m.submodules.issue = issue = StepIssue(cfg)
        m.submodules.operands = ops = OperandFetch(cfg)
        m.submodules.pe = pe = PeArray(cfg)
        m.submodules.maxpool = mp = MaxPoolOr(cfg)
        m.submodules.drain = drain = Drain(cfg)
        m.submodules.dump = dump = TraceDump(cfg)
        busy = Signal()
        prog_read = self._memories(m, loader, loops, issue, pe, drain, busy)
        lanes = self._lane_masks(m, loader.globals)
        d, s2 = loops.desc, issue.op

        error = Signal(8)
        m.d.comb += [self.status.error.eq(error), self.status.ready.eq(loader.ready),
                     self.status.busy.eq(busy)]
        with m.If(loader.error_set):
            m.d.sync += error.eq(loader.error)
        with m.If(tin.error_set):  # after the loader's: an input's error wins
            m.d.sync += error.eq(tin.error)

        # The load bytes come from the host link's queue memory: registered before the
        # parser's field checks (not a path from that block RAM to the loaded registers).
        m.submodules.load_register = load_register = StreamRegister()
        wiring.connect(m, wiring.flipped(self.load), load_register.i)
        wiring.connect(m, load_register.o, loader.load)
        wiring.connect(m, wiring.flipped(self.tokens), tin.tokens)
        m.d.comb += [tin.loaded.eq(loader.ready), tin.n_pixels.eq(loader.globals.n_pixels),
                     unpack.globals.eq(loader.globals), unpack.lane_group.eq(lanes.group),
                     tin.rd_index.eq(unpack.rd_index), unpack.rd_data.eq(tin.rd_data),
                     tin.release.eq(unpack.release)]

        # Stage 1 -> activation reads (the dump reads the row port between passes) -> stage 2.
        m.d.comb += [issue.desc.eq(d), issue.state.eq(loops.state),
                     loops.advance.eq(issue.advance),
                     issue.drain_pending.eq(drain.busy | pe.last_pending),
                     act.lane_valid.eq(lanes.valid)]
        wiring.connect(m, issue.col, act.col)
        with m.If(dump.read_active):
            m.d.comb += act.row.addr.eq(dump.read_addr)
        with m.Else():
            m.d.comb += act.row.addr.eq(issue.row.addr)
            if cfg.lane_packing:
                m.d.comb += act.row.adjust.eq(issue.row.adjust)
        m.d.comb += [dump.read_word.eq(act.row.words[0]), dump.base.eq(d.dump_base),
                     dump.words.eq(d.dump_words)]
        m.d.comb += [ops.col_words.eq(act.col.words), ops.row_words.eq(act.row.words),
                     ops.step.eq(s2), ops.col_mode.eq(d.col_mode), ops.row_mode.eq(d.row_mode),
                     ops.T.eq(loader.globals.T), ops.lane_valid.eq(lanes.valid)]
        if cfg.lane_packing:
            m.d.comb += ops.used.eq(lanes.used)

        # Stage 3: the PE array (or the max-pool OR of the run words).
        maxpool = d.op == isa.OP_MAXPOOL
        m.d.comb += [pe.colop.eq(ops.colop), pe.rowop.eq(ops.rowop),
                     pe.valid.eq(s2.valid & ~maxpool), pe.last.eq(s2.last),
                     pe.shift.eq(s2.shift), pe.neg.eq(s2.neg)]
        if cfg.paired_steps:
            m.d.comb += [pe.colop2.eq(ops.colop2), pe.shift2.eq(s2.shift2),
                         pe.neg2.eq(s2.neg2)]
        if not cfg.double_buffer:
            # The last row is read from the working accumulators a cycle after its issue.
            clear = Signal()
            m.d.sync += clear.eq(drain.done)
            m.d.comb += pe.clear.eq(clear)
        # The max-pool OR reads the run words from a register (as the PE array does): the
        # bank read and the OR into its running register are two paths. Its chunk's outputs are
        # registered with their write (address, column mask) and written a cycle later: the
        # OR is not on a read-to-write path either. (A chunk is at least 3 steps, so the
        # sequencer's chunk registers still hold this chunk when its last step is here.)
        mp_in = Signal(data.StructLayout({"words": data.ArrayLayout(cfg.lanes, cfg.pe_cols),
                                          "valid": 1, "first": 1, "last": 1, "seg": 2}))
        m.d.sync += [mp_in.words.eq(ops.colop), mp_in.valid.eq(s2.valid & maxpool),
                     mp_in.first.eq(s2.first), mp_in.last.eq(s2.last), mp_in.seg.eq(s2.seg)]
        m.d.comb += [mp.words.eq(mp_in.words), mp.valid.eq(mp_in.valid),
                     mp.first.eq(mp_in.first), mp.seg.eq(mp_in.seg)]
        C, MP_K = cfg.pe_cols, isa.maxpool_chunk(cfg.pe_cols)[0]
        mp_write = Signal()
        mp_words = Signal(data.ArrayLayout(cfg.lanes, MP_K))
        mp_addr, mp_wmask = Signal.like(act.write.addr), Signal(C)
        m.d.sync += [mp_write.eq(mp_in.valid & mp_in.last), mp_words.eq(mp.result),
                     mp_addr.eq(issue.chunk.out_t),
                     mp_wmask.eq(Mux(issue.chunk.last_ct, ~(Const(-1, C) << d.mp_last),
                                     (1 << MP_K) - 1))]

        # The drain starts when a tile's last step leaves the array.
        m.d.comb += [drain.start.eq(pe.last_out), drain.tile.eq(issue.tile),
                     drain.desc.out_mode.eq(d.out_mode), drain.desc.out_planes.eq(d.out_planes),
                     drain.desc.out_row.eq(d.out_row), drain.desc.out_plane.eq(d.out_plane),
                     drain.lane_start.eq(lanes.start), drain.lane_valid.eq(lanes.valid),
                     drain.shadow.eq(pe.shadow), drain.emit_ready.eq(self.results.ready)]

        # The activation write port: the drain's runs, the unpacker's planes, max-pool chunks.
        with m.If(drain.write.valid):
            m.d.comb += [act.write.addr.eq(drain.write.addr),
                         act.write.words.eq(drain.write.words), act.write.en.eq(drain.write.en)]
        with m.If(unpack.write.en):
            m.d.comb += [act.write.addr.eq(unpack.write.addr),
                         act.write.words[0].eq(unpack.write.word), act.write.en.eq(1)]
        with m.If(mp_write):
            m.d.comb += [act.write.addr.eq(mp_addr), act.write.en.eq(mp_wmask)]
            m.d.comb += [act.write.words[k].eq(mp_words[k]) for k in range(MP_K)]

        # Results: the drain's logits or the dump's words.
        res = self.results
        with m.If(drain.emit_valid):
            m.d.comb += [res.valid.eq(1), res.payload.data.eq(drain.emit_data),
                         res.payload.last.eq(drain.emit_last)]
        with m.Else():
            m.d.comb += [res.valid.eq(dump.emit.valid), res.payload.data.eq(dump.emit.data)]
        m.d.comb += dump.emit_ready.eq(res.ready)

        pipeline_empty = (~loops.state.valid & ~issue.pending & ~pe.last_pending & ~drain.busy
                          & ~drain.pipe_busy & ~mp_in.valid & ~mp_write)
        self._controller(m, loader, tin, unpack, loops, dump, prog_read, busy, pipeline_empty)
        return m

    def _controller(self, m, loader, tin, unpack, loops, dump, prog_read, busy,
                    pipeline_empty):
        """The pass controller's FSM: IDLE -> UNPACK -> (DESC -> DESC_LATCH -> START -> ARRAY
        -> PASS_END [-> DUMP]) per pass -> FINISH."""
        cfg = self.config
        NW = isa.desc_words()
        pass_i = Signal(range(cfg.program_depth))
        prog_rd = Signal(range(cfg.program_depth * NW + 1))  # next program word to read
        desc_word = Signal(range(NW))
        trace_on = Signal()
        # Whether `pass_i` is the program's last pass, registered as it moves (looking one
        # pass ahead), so the end of a pass decides from a flip-flop.
        pass_last = Signal()
        m.d.comb += [loops.desc_word.index.eq(desc_word),
                     loops.desc_word.data.eq(prog_read.data)]

        def next_pass():
            with m.If(pass_last):
                m.d.sync += state.eq(PassState.FINISH)
            with m.Else():
                m.d.sync += [pass_i.eq(pass_i + 1), pass_last.eq(pass_i + 2 == loader.n_passes),
                             state.eq(PassState.DESC)]

        state = Signal(PassState)
        with m.Switch(state):
            with m.Case(PassState.IDLE):
                with m.If(loader.ready & tin.available):
                    m.d.comb += unpack.start.eq(1)
                    m.d.sync += [busy.eq(1), trace_on.eq(tin.trace)]
                    m.d.sync += state.eq(PassState.UNPACK)
            with m.Case(PassState.UNPACK):
                with m.If(unpack.done):
                    m.d.sync += [pass_i.eq(0), pass_last.eq(loader.n_passes == 1),
                                 prog_rd.eq(0)]
                    m.d.sync += state.eq(PassState.DESC)
            # A descriptor: NW words, one per cycle; prog_rd ends on the next one's first word.
            with m.Case(PassState.DESC):
                m.d.comb += prog_read.addr.eq(prog_rd)
                m.d.sync += [prog_rd.eq(prog_rd + 1), desc_word.eq(0)]
                m.d.sync += state.eq(PassState.DESC_LATCH)
            with m.Case(PassState.DESC_LATCH):
                m.d.comb += [prog_read.addr.eq(prog_rd), loops.desc_word.valid.eq(1)]
                m.d.sync += desc_word.eq(desc_word + 1)
                with m.If(desc_word == NW - 1):
                    m.d.sync += state.eq(PassState.START)
                with m.Else():
                    m.d.sync += prog_rd.eq(prog_rd + 1)
            with m.Case(PassState.START):
                m.d.comb += loops.start.eq(1)
                m.d.sync += state.eq(PassState.ARRAY)
            with m.Case(PassState.ARRAY):
                with m.If(pipeline_empty):
                    m.d.sync += state.eq(PassState.PASS_END)
            with m.Case(PassState.PASS_END):
                with m.If(trace_on & (loops.desc.dump_words != 0)):
                    m.d.comb += dump.start.eq(1)
                    m.d.sync += state.eq(PassState.DUMP)
                with m.Else():
                    next_pass()
            with m.Case(PassState.DUMP):
                with m.If(dump.done):
                    next_pass()
            with m.Case(PassState.FINISH):
                m.d.sync += busy.eq(0)
                m.d.sync += state.eq(PassState.IDLE)

    def _memories(self, m, loader, loops, issue, pe, drain, busy):
        """The weight, parameter, step and program memories, written by the loader and read
        by the passes; returns the program memory's read port (the controller's)."""
        cfg = self.config
        R, WB = cfg.pe_rows, cfg.weight_bits
        FW, FPW, NW = isa.field_width(cfg), isa.FIELDS_PER_WORD, isa.desc_words()
        wmem = Memory(shape=unsigned(R * WB), depth=cfg.weight_depth, init=[])
        pmem = Memory(shape=unsigned(cfg.acc_bits + cfg.membrane_bits), depth=cfg.param_depth,
                      init=[])
        # The step memory holds each field of `isa.STEP_LAYOUT` at the width this array uses.
        smem = Memory(shape=step_layout(cfg), depth=cfg.step_depth, init=[])
        # A descriptor is NW program words of FPW fields each, read one word per cycle.
        prog = Memory(shape=unsigned(FW * FPW), depth=cfg.program_depth * NW, init=[])
        m.submodules.wmem, m.submodules.pmem, m.submodules.smem = wmem, pmem, smem
        m.submodules.prog = prog
        m.d.comb += loader.busy.eq(busy)
        # The weight, parameter and step memories have one address for their read and write
        # port (loads and passes never overlap) and no read while writing: single-port RAMs,
        # which an iCE40 can hold in SPRAM.
        for mem, load, read_addr, read_en, data_out in (
                (wmem, loader.weight, issue.weight_addr, 1, None),
                (pmem, loader.param, drain.param_addr, 1, drain.param_data),
                (smem, loader.step, loops.step_addr, loops.step_en, issue.step)):
            rd, wr = mem.read_port(), mem.write_port()
            addr = Signal.like(rd.addr, name=f"{load.addr.name}_shared")
            m.d.comb += [addr.eq(Mux(wr.en, load.addr, read_addr)), rd.addr.eq(addr),
                         wr.addr.eq(addr), rd.en.eq(~wr.en & read_en),
                         wr.en.eq(load.en), wr.data.eq(load.data)]
            if data_out is not None:
                m.d.comb += data_out.eq(rd.data)
                continue
            # The weights of a step in the issue stage are read a stage ahead of its operands
            # and registered as they leave the block RAM.
            weights = rd.data
            if cfg.issue_stage:
                weights = Signal.like(rd.data, name="weights_s2")
                m.d.sync += weights.eq(rd.data)
            for r in range(R):
                m.d.comb += pe.weight[r].eq(weights[r * WB:(r + 1) * WB])
        g_rd, g_wr = prog.read_port(), prog.write_port(granularity=FW)
        m.d.comb += [g_wr.addr.eq(loader.program.addr), g_wr.en.eq(loader.program.en),
                     g_wr.data.eq(loader.program.data)]
        return g_rd

    def _lane_masks(self, m, glob):
        """Lane masks of the loaded program: `valid` = lanes below pack * T, `group` = the T
        lanes of lane group 0, `start` = the first lane of every group (where a LIF restarts),
        `used` = pack * T. Registered: they change only while a program loads, and they fan
        out to every operand, LIF unit and write (a decode from T and pack on each use would
        sit on those paths)."""
        L = self.config.lanes
        masks = Signal(data.StructLayout({"valid": L, "group": L, "start": L,
                                          "used": range(L * L + 1)}))
        all_ones = Const((1 << L) - 1, L)
        m.d.sync += masks.group.eq(~(all_ones << glob.T))
        if self.config.lane_packing:
            # pack * T by shift-and-add (both at most `lanes`): no multiplier.
            m.d.sync += masks.used.eq(sum(Mux(glob.pack[i], glob.T << i, 0)
                                          for i in range(len(glob.pack))))
            m.d.sync += masks.valid.eq(~(all_ones << masks.used))
            with m.Switch(glob.T):
                for t in range(1, L + 1):
                    with m.Case(t):
                        m.d.sync += masks.start.eq(sum(1 << i for i in range(0, L, t)))
        else:
            m.d.comb += [masks.valid.eq(masks.group), masks.start.eq(1)]
        return masks
