// swap-pattern: a test helper (not a tool) that makes memory go to swap and
// come back, and proves it came back intact. Used by the kernel batch
// tests/kernel/ram-dl.sh inside a cgroup whose memory.max is far below MIB.
//
//   swap-pattern [--seed N] [--rounds N] [--pause FILE] MIB
//
// Maps MIB MiB of private anonymous memory and writes every page with a
// pattern derived from the page's index, the seed and the round: each page
// distinct, so a page swapped back to the wrong place, a lost page (zeros)
// or a torn one is seen. Then each round reads every page back and checks
// it, and (but for the last) writes the next round's pattern, so pages go
// out and in again. With --pause FILE it creates FILE after the first fill
// and waits until FILE is removed before checking: the caller looks at the
// swap (or takes the remote away) while the pages are out.
//
// Prints one verdict on stdout:
//   swap-pattern: ok - MIB MiB (P pages), R rounds, 0 bad pages
//   swap-pattern: FAIL - B of P pages bad in round K (first: page I)
// and progress on stderr. Exit 0 if every page checked, 1 if any was bad,
// 2 for a usage error or when the memory cannot be mapped.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

int usage() {
  std::fprintf(stderr, "usage: swap-pattern [--seed N] [--rounds N] [--pause FILE] MIB\n");
  return 2;
}

// splitmix64's finaliser: consecutive inputs give unrelated outputs.
uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t page_key(uint64_t seed, uint64_t round, uint64_t page) { return mix(mix(seed ^ (round << 48)) ^ page); }

void fill(uint64_t* words, size_t n, uint64_t key) {
  for (size_t w = 0; w < n; ++w) words[w] = key + w * 0xD6E8FEB86659FD93ull;
}

bool check(const uint64_t* words, size_t n, uint64_t key) {
  for (size_t w = 0; w < n; ++w)
    if (words[w] != key + w * 0xD6E8FEB86659FD93ull) return false;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t seed = 1, rounds = 1, mib = 0;
  std::string pause;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 0);
    else if (a == "--rounds" && i + 1 < argc) rounds = std::strtoull(argv[++i], nullptr, 10);
    else if (a == "--pause" && i + 1 < argc) pause = argv[++i];
    else if (!a.empty() && a[0] != '-' && mib == 0) mib = std::strtoull(a.c_str(), nullptr, 10);
    else return usage();
  }
  if (mib == 0 || rounds == 0) return usage();

  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  const size_t bytes = static_cast<size_t>(mib) << 20;
  const size_t pages = bytes / page, words = page / sizeof(uint64_t);
  void* mem = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("swap-pattern: mmap");
    return 2;
  }
  auto* base = static_cast<unsigned char*>(mem);
  auto at = [&](size_t p) { return reinterpret_cast<uint64_t*>(base + p * page); };

  for (size_t p = 0; p < pages; ++p) fill(at(p), words, page_key(seed, 0, p));
  std::fprintf(stderr, "swap-pattern: %zu pages written (round 0)\n", pages);
  if (!pause.empty()) {
    FILE* f = std::fopen(pause.c_str(), "w");
    if (!f) {
      std::perror(("swap-pattern: " + pause).c_str());
      return 2;
    }
    std::fprintf(f, "%d\n", static_cast<int>(::getpid()));
    std::fclose(f);
    while (::access(pause.c_str(), F_OK) == 0) ::usleep(50 * 1000);
  }
  for (uint64_t r = 0; r < rounds; ++r) {
    size_t bad = 0, first = 0;
    for (size_t p = 0; p < pages; ++p) {
      if (!check(at(p), words, page_key(seed, r, p)) && bad++ == 0) first = p;
      if (r + 1 < rounds) fill(at(p), words, page_key(seed, r + 1, p));
    }
    if (bad) {
      std::printf("swap-pattern: FAIL - %zu of %zu pages bad in round %llu (first: page %zu)\n", bad, pages,
                  static_cast<unsigned long long>(r), first);
      return 1;
    }
    std::fprintf(stderr, "swap-pattern: round %llu checked\n", static_cast<unsigned long long>(r));
  }
  std::printf("swap-pattern: ok - %llu MiB (%zu pages), %llu rounds, 0 bad pages\n",
              static_cast<unsigned long long>(mib), pages, static_cast<unsigned long long>(rounds));
  return 0;
}
