// net-proxy: a byte-stream proxy for reliability tests and benchmarks.
//
// Each accepted connection is joined to a new connection to --connect; the
// bytes go through unchanged, each direction delayed by --delay (one way, so
// a round trip takes 2 * delay more). A control socket cuts live connections,
// refuses new ones for a while, changes the delay and reports counters, so a
// test can break the network at the moment it chooses. A test helper, not a
// tool: no man page; --help is the contract and tests/net-proxy.bats checks
// it.
//
// Why a delay does not limit throughput: a link with delay d and bandwidth B
// holds B * d bytes in flight. So each direction has a reader thread that
// stamps what it reads with its arrival time and queues it, and a writer
// thread that writes everything whose time (arrival + delay) has come, in one
// write where it can. The queue is a list of 1 MiB blocks filled in place
// (no copy, no allocation per read); its caps are backpressure only:
// kMaxQueued bytes on the way, of which at most kMaxBacklog already due.
// netem(8) would do the same in the kernel, but needs root.
//
// One file, longer than our usual, because the Makefile builds each helper
// from a single .cpp. In order: Direction (the delay queue), Link (one
// proxied connection), Proxy (accept loop and control socket), main.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/program_options.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <iostream>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cli/cli.hpp"
#include "net/endpoint.hpp"
#include "util/log.hpp"
#include "util/signals.hpp"
#include "util/units.hpp"

namespace po = boost::program_options;
using namespace memsync;

namespace {

constexpr const char* kUsage = R"(Usage: net-proxy --listen ENDPOINT --connect ENDPOINT [OPTIONS]
       net-proxy --control unix:PATH --send COMMAND

Forward every connection accepted on --listen to a new connection to
--connect, byte for byte in both directions, optionally delayed, and let a
control socket break the link on demand (for reliability tests and
benchmarks). ENDPOINT is unix:PATH or tcp:HOST:PORT (--listen also fd:N).

Options:
  -l, --listen ENDPOINT     accept clients here
  -c, --connect ENDPOINT    connect each client to this server
  -d, --delay DURATION      one-way delay in each direction, e.g. 10ms; the
                            round trip grows by twice this (default 0)
      --cut-after SIZE      cut each connection once it has forwarded SIZE
                            bytes from client to server (default: never)
      --control unix:PATH   accept control commands on this socket
      --send COMMAND        send COMMAND to the proxy at --control, print the
                            answer, exit 0 if it is "ok..." and 1 otherwise
  -v, --verbose             log connections and commands to stderr
  -h, --help                show this help
  -V, --version             show the version

Control commands, one per line; each is answered "ok" or "error: REASON":
  cut             close every current connection at once (both sides, with
                  a reset where the transport has one)
  down            refuse new connections (accept and close) until up
  up              accept connections again
  delay DURATION  the delay for data that arrives from now on
  stats           "ok accepted=N current=N cut=N refused=N c2s=BYTES s2c=BYTES"

SIGTERM and SIGINT close every connection and exit 0. Exit status: 0 ok,
1 runtime failure (or --send got "error: ..."), 2 usage error.
)";

using Clock = std::chrono::steady_clock;

constexpr size_t kBlockSize = size_t{1} << 20;       // one read at most
constexpr uint64_t kMaxQueued = uint64_t{512} << 20;  // per direction, due or not
constexpr uint64_t kMaxBacklog = uint64_t{16} << 20;  // per direction, already due
constexpr size_t kSpareBlocks = 8;                   // kept for reuse
constexpr size_t kMaxControlLine = 4096;

struct Options {
  Endpoint listen, connect, control;
  bool has_control = false;
  uint64_t cut_after = 0;  // 0: never
};

// What every connection shares: the settings the control socket changes and
// the counters it reports. Atomics: read and written from every thread.
struct Shared {
  Options opts;
  std::atomic<int64_t> delay_ns{0};
  std::atomic<bool> down{false};
  std::atomic<uint64_t> accepted{0}, current{0}, cut{0}, refused{0}, c2s{0}, s2c{0};
};

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Small writes must not wait for Nagle: that would add latency the test did
// not ask for. Fails harmlessly on unix sockets.
void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// close() then sends a reset (TCP) instead of an orderly end.
void set_linger_zero(int fd) {
  linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

class Link;

// One direction of a link: bytes read from src wait in blocks until their
// due time, then go to dst. read_loop and write_loop run on their own
// threads; wake() (any thread) makes both look at Link::stopping() again.
//
// Positions are offsets in the stream (bytes since the link began), so
// "what may be written now" is one number, due_end_, kept up to date by
// walking the marks once each.
class Direction {
 public:
  Direction(Link& link, const std::atomic<int64_t>& delay_ns, std::atomic<uint64_t>& total, uint64_t cut_after)
      : link_(link), delay_ns_(delay_ns), total_(total), cut_after_(cut_after) {}
  // REQUIRES: before the loops start.
  void attach(int src, int dst) { src_ = src; dst_ = dst; }
  void read_loop();
  void write_loop();
  void wake();
  uint64_t forwarded() const { return forwarded_.load(); }
  // Frees the blocks. REQUIRES: both loops have returned.
  void release_memory();

 private:
  struct Mark {
    uint64_t end;  // stream offset just past what one read brought
    Clock::time_point due;
  };
  using Block = std::unique_ptr<char[]>;  // kBlockSize bytes
  Block new_block();
  // Extends the due prefix to every mark due by `now`. REQUIRES: mu_ held.
  void advance_due(Clock::time_point now);
  bool must_wait_to_read();

  Link& link_;
  const std::atomic<int64_t>& delay_ns_;
  std::atomic<uint64_t>& total_;
  const uint64_t cut_after_;  // 0: never
  int src_ = -1, dst_ = -1;
  std::atomic<uint64_t> forwarded_{0};

  std::mutex mu_;  // guards everything below
  std::condition_variable data_cv_, space_cv_;
  std::deque<Block> blocks_;   // blocks_[0] holds stream offsets [base_, base_ + kBlockSize)
  std::vector<Block> spare_;
  uint64_t base_ = 0;
  uint64_t read_ = 0;          // stream offset the reader has reached
  uint64_t written_ = 0;       // stream offset the writer has reached
  std::deque<Mark> marks_;     // reads not completely written, oldest first
  size_t due_count_ = 0;       // marks_[0, due_count_) are due ...
  uint64_t due_end_ = 0;       // ... and end here: the writer may go this far
  bool writer_idle_ = false;     // the writer waits for data (not for a due time)
  bool reader_blocked_ = false;  // the reader waits for the writer
  bool eof_ = false;
  Clock::time_point eof_due_;
};

// One proxied connection: the client's socket, the server's, and the two
// directions. Its owner thread connects, runs the directions and closes.
class Link {
 public:
  Link(Shared& shared, UniqueFd client, uint64_t id)
      : shared_(shared), id_(id), client_(std::move(client)), cut_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
        c2s_(*this, shared.delay_ns, shared.c2s, shared.opts.cut_after), s2c_(*this, shared.delay_ns, shared.s2c, 0) {
    owner_ = std::jthread([this] { run(); });
  }
  ~Link() { stop(false); }  // then owner_, the last member, is joined first

  // Ends the link at once; both sockets are closed with a reset where the
  // transport has one. `counted`: a deliberate cut, shown in stats.
  void stop(bool counted);
  bool stopping() const { return stopping_.load(); }
  bool finished() const { return finished_.load(); }
  // Waits until both sockets are closed; false if that takes over `limit`.
  bool wait_finished(std::chrono::milliseconds limit);

  // Nonblocking I/O that sleeps in poll and gives up when the link stops.
  // Bytes moved; 0 at end of file (reads); -1 on error (errno) or stop.
  ssize_t read_some(int fd, char* buf, size_t len);
  ssize_t write_some(int fd, const char* buf, size_t len);

 private:
  void run();
  bool wait_io(int fd, short events);

  Shared& shared_;
  const uint64_t id_;
  UniqueFd client_, server_;
  UniqueFd cut_fd_;  // eventfd, readable once the link stops: wakes poll
  std::atomic<bool> stopping_{false}, counted_{false}, finished_{false};
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  Direction c2s_, s2c_;
  std::jthread owner_;  // last: starts once everything above exists
};

Direction::Block Direction::new_block() {
  if (spare_.empty()) return Block(new char[kBlockSize]);  // not zeroed: reads fill it
  Block b = std::move(spare_.back());
  spare_.pop_back();
  return b;
}

void Direction::advance_due(Clock::time_point now) {
  // A mark is due when it and every mark before it are due: the stream
  // keeps its order even if the delay was lowered in between.
  while (due_count_ < marks_.size() && marks_[due_count_].due <= now) due_end_ = marks_[due_count_++].end;
}

// Backpressure, as a real link's buffers would give: stop reading when more
// than kMaxQueued bytes are on the way, or when the destination is slow and
// more than kMaxBacklog bytes are already due (without this second limit a
// slow reader at delay 0 would let the proxy buffer half a gigabyte).
bool Direction::must_wait_to_read() {
  if (link_.stopping()) return false;
  if (read_ - written_ >= kMaxQueued) return true;
  advance_due(Clock::now());
  return due_end_ - written_ >= kMaxBacklog;
}

void Direction::read_loop() {
  for (;;) {
    char* p;
    size_t room;
    {
      std::unique_lock lock(mu_);
      if (must_wait_to_read()) {
        reader_blocked_ = true;
        space_cv_.wait(lock, [&] { return !must_wait_to_read(); });
        reader_blocked_ = false;
      }
      if (link_.stopping()) return;
      uint64_t end = base_ + blocks_.size() * kBlockSize;
      if (read_ == end) {
        blocks_.push_back(new_block());
        end += kBlockSize;
      }
      // The writer recycles only blocks it has written completely, so the
      // tail block stays put while we read into it outside the lock.
      p = blocks_.back().get() + (kBlockSize - (end - read_));
      room = end - read_;
    }
    ssize_t n = link_.read_some(src_, p, room);
    if (n < 0) {
      if (!link_.stopping()) log::debug(std::string("read: ") + std::strerror(errno));
      link_.stop(false);
      return;
    }
    auto due = Clock::now() + std::chrono::nanoseconds(delay_ns_.load(std::memory_order_relaxed));
    std::lock_guard lock(mu_);
    if (n == 0) {
      eof_ = true;
      eof_due_ = due;
      data_cv_.notify_all();
      return;
    }
    read_ += static_cast<uint64_t>(n);
    marks_.push_back({read_, due});
    // A writer sleeping until an earlier due time needs no wake-up: it must
    // write that data first anyway.
    if (writer_idle_) data_cv_.notify_all();
  }
}

void Direction::write_loop() {
  for (;;) {
    const char* p = nullptr;
    uint64_t len = 0;
    {
      std::unique_lock lock(mu_);
      for (;;) {
        if (link_.stopping()) return;
        while (!blocks_.empty() && written_ >= base_ + kBlockSize) {
          if (spare_.size() < kSpareBlocks) spare_.push_back(std::move(blocks_.front()));
          blocks_.pop_front();
          base_ += kBlockSize;
        }
        const auto now = Clock::now();
        advance_due(now);
        if (due_end_ > written_) {
          // Everything due in the front block, in one write.
          p = blocks_.front().get() + (written_ - base_);
          len = std::min(due_end_, base_ + kBlockSize) - written_;
          break;
        }
        std::optional<Clock::time_point> wake_at;
        if (due_count_ < marks_.size()) {
          wake_at = marks_[due_count_].due;
        } else if (eof_) {
          // Drained, and the source has finished: pass the half-close on,
          // as late as data would have gone.
          if (eof_due_ <= now) {
            lock.unlock();
            ::shutdown(dst_, SHUT_WR);
            return;
          }
          wake_at = eof_due_;
        }
        if (wake_at) {
          data_cv_.wait_until(lock, *wake_at);
        } else {
          writer_idle_ = true;
          data_cv_.wait(lock);
          writer_idle_ = false;
        }
      }
    }
    if (cut_after_ != 0) len = std::min(len, cut_after_ - forwarded_.load());
    ssize_t n = link_.write_some(dst_, p, len);
    if (n < 0) {
      if (!link_.stopping()) log::debug(std::string("write: ") + std::strerror(errno));
      link_.stop(false);
      return;
    }
    forwarded_ += static_cast<uint64_t>(n);
    total_ += static_cast<uint64_t>(n);
    {
      std::lock_guard lock(mu_);
      written_ += static_cast<uint64_t>(n);
      // Only due marks can have been written, so due_count_ covers these.
      while (!marks_.empty() && marks_.front().end <= written_) {
        marks_.pop_front();
        --due_count_;
      }
      if (reader_blocked_) space_cv_.notify_all();
    }
    if (cut_after_ != 0 && forwarded_.load() >= cut_after_) {
      link_.stop(true);
      return;
    }
  }
}

void Direction::wake() {
  std::lock_guard lock(mu_);
  data_cv_.notify_all();
  space_cv_.notify_all();
}

void Direction::release_memory() {
  std::lock_guard lock(mu_);
  blocks_.clear();
  spare_.clear();
  marks_.clear();
  due_count_ = 0;
}

void Link::stop(bool counted) {
  if (finished_.load() || stopping_.exchange(true)) return;
  if (counted) {
    counted_ = true;
    ++shared_.cut;
  }
  uint64_t one = 1;
  (void)!::write(cut_fd_.get(), &one, sizeof one);
  c2s_.wake();
  s2c_.wake();
}

bool Link::wait_finished(std::chrono::milliseconds limit) {
  std::unique_lock lock(done_mu_);
  return done_cv_.wait_for(lock, limit, [&] { return finished_.load(); });
}

bool Link::wait_io(int fd, short events) {
  pollfd p[2] = {{fd, events, 0}, {cut_fd_.get(), POLLIN, 0}};
  for (;;) {
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (p[1].revents) {
      errno = ECANCELED;
      return false;
    }
    return true;  // ready, or POLLERR/POLLHUP that the next call reports
  }
}

ssize_t Link::read_some(int fd, char* buf, size_t len) {
  for (;;) {
    if (stopping()) {
      errno = ECANCELED;
      return -1;
    }
    ssize_t n = ::read(fd, buf, len);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno != EAGAIN || !wait_io(fd, POLLIN)) return -1;
  }
}

ssize_t Link::write_some(int fd, const char* buf, size_t len) {
  for (;;) {
    if (stopping()) {
      errno = ECANCELED;
      return -1;
    }
    ssize_t n = ::write(fd, buf, len);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno != EAGAIN || !wait_io(fd, POLLOUT)) return -1;
  }
}

void Link::run() {
  const std::string name = "connection " + std::to_string(id_);
  log::info(name + ": accepted");
  auto up = connect_endpoint(shared_.opts.connect);
  if (!up) {
    log::info(name + ": unable to connect: " + up.status().message());
    stop(false);
  } else {
    server_ = std::move(*up);
    set_nonblocking(server_.get());
    set_nodelay(server_.get());
    c2s_.attach(client_.get(), server_.get());
    s2c_.attach(server_.get(), client_.get());
    std::jthread a([this] { c2s_.read_loop(); });
    std::jthread b([this] { c2s_.write_loop(); });
    std::jthread c([this] { s2c_.read_loop(); });
    s2c_.write_loop();
  }
  if (stopping()) {
    set_linger_zero(client_.get());
    if (server_) set_linger_zero(server_.get());
  }
  client_.reset();
  server_.reset();
  c2s_.release_memory();
  s2c_.release_memory();
  const char* how = counted_ ? ": cut" : stopping() ? ": reset" : ": closed";
  log::info(name + how + " after " + std::to_string(c2s_.forwarded()) +
            " bytes to the server, " + std::to_string(s2c_.forwarded()) + " to the client");
  --shared_.current;
  {
    std::lock_guard lock(done_mu_);
    finished_ = true;
  }
  done_cv_.notify_all();
}

// The accept loop and the control socket, on the main thread: links are
// created, cut and reaped only here.
class Proxy {
 public:
  Proxy(Shared& shared, std::vector<UniqueFd> listeners, UniqueFd control, int stop_fd)
      : shared_(shared), listeners_(std::move(listeners)), control_(std::move(control)), stop_fd_(stop_fd) {}
  // Returns when stop_fd becomes readable, with every link closed.
  void run();

 private:
  struct ControlClient {
    UniqueFd fd;
    std::string in;
    bool open = true;
  };
  void accept_client(int listener);
  void serve_control(ControlClient& c);
  bool answer(ControlClient& c, std::string line);
  std::string command(const std::string& line);
  std::string cut_all();

  Shared& shared_;
  std::vector<UniqueFd> listeners_;
  UniqueFd control_;
  int stop_fd_;
  std::list<std::unique_ptr<Link>> links_;
  std::list<ControlClient> controls_;
  uint64_t next_id_ = 0;
};

void Proxy::run() {
  for (;;) {
    std::vector<pollfd> p;
    p.push_back({stop_fd_, POLLIN, 0});
    for (auto& l : listeners_) p.push_back({l.get(), POLLIN, 0});
    if (control_) p.push_back({control_.get(), POLLIN, 0});
    for (auto& c : controls_) p.push_back({c.fd.get(), POLLIN, 0});
    // The timeout only bounds how long finished links wait to be reaped.
    if (::poll(p.data(), p.size(), 500) < 0 && errno != EINTR) break;
    if (p[0].revents) break;
    // In the order p was built; new control clients join the list last.
    size_t i = 1;
    for (auto& l : listeners_)
      if (p[i++].revents) accept_client(l.get());
    const bool control_ready = control_ && p[i++].revents;
    for (auto& c : controls_)
      if (p[i++].revents) serve_control(c);
    if (control_ready) {
      UniqueFd c(::accept4(control_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      if (c) controls_.push_back({std::move(c), {}, true});
    }
    controls_.remove_if([](const ControlClient& c) { return !c.open; });
    links_.remove_if([](const std::unique_ptr<Link>& l) { return l->finished(); });
  }
  for (auto& l : links_) l->stop(false);
  links_.clear();
}

void Proxy::accept_client(int listener) {
  UniqueFd c(::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!c) return;  // the client gave up already, or a transient error
  if (shared_.down.load()) {
    ++shared_.refused;
    log::info("refusing a connection: the proxy is down");
    return;
  }
  set_nodelay(c.get());
  ++shared_.accepted;
  ++shared_.current;
  links_.push_back(std::make_unique<Link>(shared_, std::move(c), ++next_id_));
}

void Proxy::serve_control(ControlClient& c) {
  char buf[1024];
  ssize_t n = ::read(c.fd.get(), buf, sizeof buf);
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) c.open = false;
    return;
  }
  if (n == 0) {
    // A last command without its newline still counts: printf cut | ...
    if (!c.in.empty()) answer(c, std::move(c.in));
    c.open = false;
    return;
  }
  c.in.append(buf, static_cast<size_t>(n));
  for (size_t nl; c.open && (nl = c.in.find('\n')) != std::string::npos;) {
    std::string line = c.in.substr(0, nl);
    c.in.erase(0, nl + 1);
    c.open = answer(c, std::move(line));
  }
  if (c.open && c.in.size() > kMaxControlLine) {
    const char reply[] = "error: line too long\n";
    (void)!::send(c.fd.get(), reply, sizeof reply - 1, MSG_NOSIGNAL);
    c.open = false;
  }
}

// Writes the answer to one line; false if the client is gone. Answers are
// short, so a client that reads nothing may fill its buffer only after many
// commands; then it is dropped rather than stalling the proxy.
bool Proxy::answer(ControlClient& c, std::string line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  std::string reply = command(line);
  if (reply.empty()) return true;
  log::info("control: '" + line + "': " + reply);
  reply += '\n';
  return ::send(c.fd.get(), reply.data(), reply.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(reply.size());
}

std::string Proxy::command(const std::string& line) {
  size_t start = line.find_first_not_of(' ');
  if (start == std::string::npos) return "";  // blank lines are ignored
  std::string word = line.substr(start), arg;
  if (size_t sp = word.find(' '); sp != std::string::npos) {
    arg = word.substr(word.find_first_not_of(' ', sp));
    word.resize(sp);
  }
  if (word == "delay") {
    if (arg.empty()) return "error: delay needs a DURATION, e.g. delay 10ms";
    auto d = parse_duration(arg);
    if (!d) return "error: " + d.status().message();
    shared_.delay_ns = d->count();
    return "ok";
  }
  if (!arg.empty() && (word == "cut" || word == "down" || word == "up" || word == "stats"))
    return "error: " + word + " takes no argument";
  if (word == "cut") return cut_all();
  if (word == "down" || word == "up") {
    shared_.down = word == "down";
    return "ok";
  }
  if (word == "stats") {
    return "ok accepted=" + std::to_string(shared_.accepted.load()) + " current=" + std::to_string(shared_.current.load()) +
           " cut=" + std::to_string(shared_.cut.load()) + " refused=" + std::to_string(shared_.refused.load()) +
           " c2s=" + std::to_string(shared_.c2s.load()) + " s2c=" + std::to_string(shared_.s2c.load());
  }
  return "error: unknown command '" + word + "' (expected cut, down, up, delay DURATION or stats)";
}

// Answers only once every cut connection is closed, so that a test that
// goes on after "ok" finds the clients already cut off.
std::string Proxy::cut_all() {
  std::vector<Link*> cut;
  for (auto& l : links_) {
    if (l->finished() || l->stopping()) continue;
    l->stop(true);
    cut.push_back(l.get());
  }
  for (Link* l : cut)
    if (!l->wait_finished(std::chrono::seconds(10))) return "error: a cut connection did not close within 10 s";
  return "ok";
}

// --send: one command to a running proxy, its answer on stdout.
int send_command(const Endpoint& control, const std::string& cmd) {
  auto fd = connect_endpoint(control);
  if (!fd) return cli::fail("send '" + cmd + "'", fd.status());
  std::string out = cmd + "\n";
  for (size_t off = 0; off < out.size();) {
    ssize_t n = ::send(fd->get(), out.data() + off, out.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return cli::fail("send '" + cmd + "'", Status::from_errno("write to " + control.to_string()));
    off += static_cast<size_t>(n);
  }
  ::shutdown(fd->get(), SHUT_WR);
  std::string reply;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return cli::fail("send '" + cmd + "'", Status::from_errno("read from " + control.to_string()));
    if (n == 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  if (reply.empty()) return cli::fail("send '" + cmd + "'", Status::closed("the proxy closed without an answer"));
  std::cout << reply << std::flush;
  return reply == "ok\n" || reply.starts_with("ok ") ? cli::kExitOk : cli::kExitFailure;
}

// Removes the socket files this process created, at every exit.
struct SocketFiles {
  std::vector<std::string> paths;
  void add(const Endpoint& ep) {
    if (ep.kind == Endpoint::Kind::Unix && ep.path[0] != '@') paths.push_back(ep.path);
  }
  ~SocketFiles() {
    for (auto& p : paths) ::unlink(p.c_str());
  }
};

Endpoint endpoint_option(const std::string& text, const std::string& option, bool listening) {
  Endpoint ep = cli::usage_value(parse_endpoint(text), option);
  bool fits = ep.kind == Endpoint::Kind::Unix || ep.kind == Endpoint::Kind::Tcp || (listening && ep.kind == Endpoint::Kind::Fd);
  if (!fits)
    throw cli::UsageError(option + ": expected unix:PATH or tcp:HOST:PORT" + (listening ? " (or fd:N, a listening socket)" : ""));
  return ep;
}

int proxy_main(int argc, char** argv) {
  std::string listen, connect, delay = "0", cut_after, control, send, extra;
  bool help = false, version = false;
  po::options_description desc;
  desc.add_options()
      ("listen,l", po::value(&listen))
      ("connect,c", po::value(&connect))
      ("delay,d", po::value(&delay))
      ("cut-after", po::value(&cut_after))
      ("control", po::value(&control))
      ("send", po::value(&send))
      ("verbose,v", po::value<int>()->zero_tokens()->default_value(0)->implicit_value(1))
      ("help,h", po::bool_switch(&help))
      ("version,V", po::bool_switch(&version))
      ("argument", po::value(&extra));
  po::variables_map vm;
  int verbose = cli::parse_options(argc, argv, desc, "argument", vm);
  if (help) { std::cout << kUsage; return cli::kExitOk; }
  if (version) { std::cout << cli::version_text("net-proxy"); return cli::kExitOk; }
  log::set_verbosity(verbose);
  if (vm.count("argument")) throw cli::UsageError("unexpected argument '" + extra + "'");

  Shared shared;
  Options& opts = shared.opts;
  if (vm.count("control")) {
    opts.control = cli::usage_value(parse_endpoint(control), "--control");
    if (opts.control.kind != Endpoint::Kind::Unix) throw cli::UsageError("--control: expected unix:PATH");
    opts.has_control = true;
  }
  if (vm.count("send")) {
    if (!opts.has_control) throw cli::UsageError("--send needs --control unix:PATH, the proxy's control socket");
    for (const char* o : {"listen", "connect", "delay", "cut-after"})
      if (vm.count(o)) throw cli::UsageError(std::string("--send talks to a running proxy: --") + o + " does not apply");
    if (send.find('\n') != std::string::npos) throw cli::UsageError("--send: one command, without a newline");
    return send_command(opts.control, send);
  }
  if (listen.empty() || connect.empty()) throw cli::UsageError("give --listen ENDPOINT and --connect ENDPOINT");
  opts.listen = endpoint_option(listen, "--listen", true);
  opts.connect = endpoint_option(connect, "--connect", false);
  shared.delay_ns = cli::usage_value(parse_duration(delay), "--delay").count();
  if (vm.count("cut-after")) {
    opts.cut_after = cli::usage_value(parse_size(cut_after), "--cut-after");
    if (opts.cut_after == 0) throw cli::UsageError("--cut-after: must be more than 0");
  }

  UniqueFd stop_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  SignalWatcher signals({SIGINT, SIGTERM}, [&](int sig) {
    log::info(std::string("caught ") + strsignal(sig) + ", shutting down");
    uint64_t one = 1;
    (void)!::write(stop_fd.get(), &one, sizeof one);
  });
  SocketFiles files;
  auto listeners = listen_endpoint(opts.listen);
  if (!listeners) return cli::fail("listen", listeners.status());
  files.add(opts.listen);
  for (auto& l : *listeners) set_nonblocking(l.get());
  UniqueFd control_fd;
  if (opts.has_control) {
    auto c = listen_endpoint(opts.control);
    if (!c) return cli::fail("listen for control", c.status());
    files.add(opts.control);
    control_fd = std::move(c->front());
    set_nonblocking(control_fd.get());
  }
  if (auto where = local_endpoint(listeners->front().get()))
    log::info("listening on " + where->to_string() + ", forwarding to " + opts.connect.to_string());
  Proxy proxy(shared, std::move(*listeners), std::move(control_fd), stop_fd.get());
  proxy.run();
  return cli::kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  return cli::run_main("net-proxy", [&] { return proxy_main(argc, argv); });
}
