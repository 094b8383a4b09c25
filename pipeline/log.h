/* log.h — log lines with an ISO time, the MPI rank and a level, flushed at once.
 *   2026-11-23T12:00:01.123Z [r3] INFO  quantized model.layers.0.mlp.up_proj.weight
 * Errors add [file:line]. TQ_LOG0 prints on rank 0 only. The rank is set once by the MPI runtime
 * (tq_log_set_rank); before that it prints [r-]. TQ_LOG_LEVEL=debug|info|warn|error filters. */
#ifndef TQ_LOG_H
#define TQ_LOG_H

typedef enum { TQ_LOG_DBG = 0, TQ_LOG_INFO = 1, TQ_LOG_WARN = 2, TQ_LOG_ERR = 3 } tq_log_level;

void tq_log_set_rank(int rank);
int tq_log_rank(void); /* -1 before the runtime set it */
void tq_log_msg(tq_log_level lvl, const char* file, int line, const char* fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define TQ_LOG(lvl, ...) tq_log_msg((lvl), __FILE__, __LINE__, __VA_ARGS__)
#define TQ_LOG0(lvl, ...)                                                                          \
    do {                                                                                           \
        if (tq_log_rank() <= 0) tq_log_msg((lvl), __FILE__, __LINE__, __VA_ARGS__);               \
    } while (0)

#endif
