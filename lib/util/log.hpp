// Logging to stderr, the same shape in every tool: "PROG: message".
//
// set_program() once in main; verbosity 0 = errors and warnings, 1 = info
// (connections), 2 = debug (every request). Thread safety: log lines from
// different threads never interleave within a line; set_* before threads.
#pragma once

#include <string>

namespace memsync::log {

void set_program(std::string name);
const std::string& program();
void set_verbosity(int level);
int verbosity();

void error(const std::string& msg);  // always printed
void warn(const std::string& msg);   // always printed
void info(const std::string& msg);   // verbosity >= 1
void debug(const std::string& msg);  // verbosity >= 2

}  // namespace memsync::log
