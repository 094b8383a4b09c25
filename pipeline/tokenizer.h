/* tokenizer.h — the llama2.c tokenizer (sentencepiece-style BPE with byte fallback), used to turn text
 * into tokens for stories260K-style models and to print generated text exactly as llama2.c does.
 *
 * File format (tok512.bin, llama2.c tokenizer.bin), little-endian:
 *   int32 max_token_length
 *   vocab_size times: float32 score, int32 len, len bytes (not NUL-terminated)
 * The vocabulary size is not stored: the caller gives it (config vocab_size) or passes 0 to read to EOF.
 * Token ids: 0 <unk>, 1 <s> (BOS), 2 </s> (EOS), 3..258 the byte tokens <0x00>..<0xFF>. */
#ifndef TQ_TOKENIZER_H
#define TQ_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef struct tq_tokenizer tq_tokenizer;

/* Load a tokenizer file. vocab_size 0: read entries until EOF. Errors name the path and entry. */
tq_status tq_tokenizer_load(const char* path, int vocab_size, tq_tokenizer** out);
void tq_tokenizer_free(tq_tokenizer** pt);
int tq_tokenizer_vocab(const tq_tokenizer* t);

/* Encode UTF-8 text as llama2.c's run.c does: optional BOS (1), a dummy-prefix " " token when the text
 * is non-empty, one token per code point (or its bytes + 3 when the code point is not in the vocab),
 * then repeated merges of the adjacent pair whose concatenation has the highest score; optional EOS (2).
 * tokens must hold strlen(text) + 3 entries; *n receives the count. */
tq_status tq_tokenizer_encode(const tq_tokenizer* t, const char* text, int bos, int eos, int* tokens, int* n);

/* The bytes llama2.c prints for `token` after `prev`: the leading space is dropped after BOS and
 * <0xXX> pieces become the raw byte. *len receives the byte count (a raw byte may be 0). */
const char* tq_tokenizer_decode(const tq_tokenizer* t, int prev, int token, size_t* len);

/* Whether llama2.c's safe_printf prints the piece (it skips single non-printable, non-space bytes). */
int tq_tokenizer_printable(const char* piece, size_t len);

#endif
