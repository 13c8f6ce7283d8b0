/* Read bandwidth probe for bench/cpu-vs-peers.sh: a STREAM-like read-only sum.
 *
 *   gcc -O3 -march=native -pthread stream.c -o stream && ./stream THREADS [MIB] [REPS]
 *
 * Allocates MIB (default 1024) MiB of 64-bit integers, each thread first-touching and then
 * summing its own contiguous slice (so pages sit where the reader runs), REPS (default 7)
 * timed passes; prints the best pass as `read_gbs <GB/s>` (1 GB = 1e9 bytes) and the
 * median as `read_gbs_median`. Integer sums vectorise without -ffast-math and the result
 * is printed, so the loads cannot be optimised away. This is the bandwidth a decoder that
 * streams its weights once per token can hope for with the same thread count.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
  uint64_t *a;
  size_t n;
  uint64_t sum;
  pthread_barrier_t *start, *done;
  int reps;
} job_t;

static void *worker(void *p) {
  job_t *j = p;
  for (size_t i = 0; i < j->n; i++) j->a[i] = i * 2654435761u;
  for (int r = 0; r < j->reps; r++) {
    pthread_barrier_wait(j->start);
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= j->n; i += 4) {
      s0 += j->a[i];
      s1 += j->a[i + 1];
      s2 += j->a[i + 2];
      s3 += j->a[i + 3];
    }
    for (; i < j->n; i++) s0 += j->a[i];
    j->sum += s0 + s1 + s2 + s3;
    pthread_barrier_wait(j->done);
  }
  return NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 2;
  size_t mib = argc > 2 ? (size_t)atol(argv[2]) : 1024;
  int reps = argc > 3 ? atoi(argv[3]) : 7;
  if (threads < 1 || mib < 1 || reps < 1) {
    fprintf(stderr, "usage: stream THREADS [MIB] [REPS]\n");
    return 2;
  }
  size_t n = mib * 1024 * 1024 / sizeof(uint64_t);
  uint64_t *a = aligned_alloc(64, n * sizeof(uint64_t));
  if (!a) {
    perror("alloc");
    return 1;
  }
  pthread_barrier_t start, done;
  pthread_barrier_init(&start, NULL, threads + 1);
  pthread_barrier_init(&done, NULL, threads + 1);
  pthread_t *th = calloc(threads, sizeof(pthread_t));
  job_t *jobs = calloc(threads, sizeof(job_t));
  size_t per = n / threads;
  for (int t = 0; t < threads; t++) {
    jobs[t] = (job_t){a + t * per, t == threads - 1 ? n - t * per : per, 0, &start, &done, reps};
    pthread_create(&th[t], NULL, worker, &jobs[t]);
  }
  double *secs = calloc(reps, sizeof(double));
  for (int r = 0; r < reps; r++) {
    pthread_barrier_wait(&start);
    double t0 = now();
    pthread_barrier_wait(&done);
    secs[r] = now() - t0;
  }
  uint64_t sum = 0;
  for (int t = 0; t < threads; t++) {
    pthread_join(th[t], NULL);
    sum += jobs[t].sum;
  }
  /* The first pass still faults nothing (pages were touched), but keep it out anyway. */
  int from = reps > 1 ? 1 : 0;
  qsort(secs + from, reps - from, sizeof(double), cmp);
  double bytes = (double)n * sizeof(uint64_t);
  printf("threads %d\nbytes %.0f\nread_gbs %.3f\nread_gbs_median %.3f\nchecksum %llu\n", threads,
         bytes, bytes / secs[from] / 1e9, bytes / secs[from + (reps - from) / 2] / 1e9,
         (unsigned long long)sum);
  return 0;
}
