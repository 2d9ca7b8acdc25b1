// Sizes and durations as memsync(7) documents them.
#include <gtest/gtest.h>

#include "util/units.hpp"

using namespace memsync;
using namespace std::chrono_literals;

TEST(Sizes, PlainAndSuffixed) {
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("64K"), 65536u);
  EXPECT_EQ(*parse_size("512M"), 512ull << 20);
  EXPECT_EQ(*parse_size("4G"), 4ull << 30);
  EXPECT_EQ(*parse_size("1t"), 1ull << 40);
  EXPECT_EQ(*parse_size("2KiB"), 2048u);
  EXPECT_EQ(*parse_size("2KB"), 2048u);
  EXPECT_EQ(*parse_size("0"), 0u);
}

TEST(Sizes, ErrorsQuoteTheInput) {
  for (const char* bad : {"", "K", "-1", "1.5G", "12Q", "1GG", " 1", "1 G"}) {
    auto r = parse_size(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.status().code(), EINVAL);
    EXPECT_NE(r.status().message().find(std::string("'") + bad + "'"), std::string::npos) << r.status().message();
  }
}

TEST(Sizes, Overflow) {
  EXPECT_FALSE(parse_size("16E"));
  EXPECT_TRUE(parse_size("15E"));
  EXPECT_FALSE(parse_size("99999999999999999999"));
  EXPECT_EQ(*parse_size("18446744073709551615"), 18446744073709551615ull);
}

TEST(Durations, Units) {
  EXPECT_EQ(*parse_duration("250ms"), 250ms);
  EXPECT_EQ(*parse_duration("5s"), 5s);
  EXPECT_EQ(*parse_duration("5"), 5s);
  EXPECT_EQ(*parse_duration("5m"), 5min);
  EXPECT_EQ(*parse_duration("2h"), 2h);
  EXPECT_EQ(*parse_duration("10us"), 10us);
  EXPECT_EQ(*parse_duration("7ns"), 7ns);
}

TEST(Durations, Errors) {
  for (const char* bad : {"", "ms", "5d", "1.5s", "-5s", "99999999999h"}) EXPECT_FALSE(parse_duration(bad)) << bad;
}

TEST(Sizes, Format) {
  EXPECT_EQ(format_size(4096), "4K");
  EXPECT_EQ(format_size(1ull << 30), "1G");
  EXPECT_EQ(format_size(1000), "1000");
  EXPECT_EQ(format_size(1536), "1.5K");
}
