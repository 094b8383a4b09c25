/* fault.h — test-only fault injection for the pipeline's restart tests, driven by the environment:
 *
 *   TQ_FAULT=SPEC[,SPEC...]   SPEC is one of
 *     kill:STAGE:K[:RANK]     SIGKILL rank RANK (default 0) right after it finished K units of STAGE
 *     fail:STAGE:K[:RANK]     the stage returns TQ_ERR_INJECTED on that rank after K units (clean error)
 *     enospc:STAGE:K[:RANK]   from the (K+1)-th durable write of STAGE on, writes fail with ENOSPC
 *                             (an injected "disk full", for machines where no small tmpfs can be mounted)
 *     slow:STAGE:MS           every rank sleeps MS ms after each unit (to requeue / kill a stage mid-way)
 *     corrupt:STAGE:UNIT      when STAGE ends, flip one byte in the stored output of unit index UNIT
 *                             (the checksum must catch it later and the unit must be redone)
 *
 * Counters are per process and per stage. Never set TQ_FAULT in production; tqpipe logs a warning
 * when it is set. */
#ifndef TQ_FAULT_H
#define TQ_FAULT_H

#include <stdint.h>

#include "status.h"

/* Arm the faults that concern `stage` on `rank` (reads TQ_FAULT). LOCAL. */
void tq_fault_begin(const char* stage, int rank);
/* Called after each unit is durably done: may SIGKILL the process (kill) or return TQ_ERR_INJECTED. */
tq_status tq_fault_unit_done(void);
/* Called before each durable write: TQ_ERR_NOSPACE (message naming path) when the enospc fault fires. */
tq_status tq_fault_write_check(const char* path);
/* Unit index to corrupt at the end of `stage`, or -1. */
int64_t tq_fault_corrupt_unit(const char* stage);
/* 1 when TQ_FAULT is set at all. */
int tq_fault_active(void);

#endif
