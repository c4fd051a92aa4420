// The `sightline` executable as a user runs it: exit codes, what reaches stderr, and no crash when
// a plugin fails (issue 22).
#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace sightline;
using namespace sightline::test;
using ::testing::HasSubstr;
using ::testing::Not;

extern char** environ;

namespace {

struct CliResult {
    std::optional<int> exit_code;  // set when it exited
    int signal = 0;                // set when a signal ended it
    bool timed_out = false;
    std::string out, err;
    std::string describe() const {
        std::string d = exit_code ? "exit code " + std::to_string(*exit_code)
                                  : timed_out ? std::string("timed out (killed)") : "signal " + std::to_string(signal);
        return d + "\n--- stderr:\n" + err + "--- stdout:\n" + out;
    }
};

// Runs SIGHTLINE_CLI with `args` in `cwd`, the environment plus `env` ("NAME=value"; "NAME=" with
// nothing after it removes NAME), killed after `timeout`.
CliResult run_cli(const std::vector<std::string>& args, const fs::path& cwd, const std::vector<std::string>& env = {},
                  std::chrono::seconds timeout = std::chrono::seconds(120)) {
    TempDir io("sightline-cli-io");
    const fs::path out_file = io / "stdout", err_file = io / "stderr";
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) {
        const std::string entry = *e;
        const std::string name = entry.substr(0, entry.find('='));
        bool replaced = false;
        for (const auto& x : env) replaced |= x.substr(0, x.find('=')) == name;
        if (!replaced) env_strings.push_back(entry);
    }
    for (const auto& x : env)
        if (x.find('=') + 1 < x.size()) env_strings.push_back(x);
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::vector<std::string> argv_strings{SIGHTLINE_CLI};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int out = ::open(out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const int err = ::open(err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    const std::string dir = cwd.string();
    CliResult r;
    if (out < 0 || err < 0) {
        ADD_FAILURE() << "cannot create " << out_file << " or " << err_file;
        return r;
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::dup2(out, 1);
        ::dup2(err, 2);
        if (::chdir(dir.c_str()) != 0) ::_exit(126);
        ::execve(argv[0], argv.data(), envp.data());
        ::_exit(127);
    }
    ::close(out);
    ::close(err);
    if (pid < 0) {
        ADD_FAILURE() << "fork failed";
        return r;
    }
    int status = 0;
    const auto until = std::chrono::steady_clock::now() + timeout;
    while (::waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > until) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, &status, 0);
            r.timed_out = true;
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (!r.timed_out) {
        if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
        if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
    }
    r.out = read_text(out_file);
    r.err = read_text(err_file);
    return r;
}

// A small valid config: orb and bruteforce over a gallery in `dir`.
fs::path write_config(const TempDir& dir, const std::string& extra = {}) {
    const fs::path config = dir / "cli.yaml";
    write_text(config, "plugins: { paths: [" + yq(plugin_dir()) + "] }\n"
                       "storages:\n  gallery: { type: local, root: " + yq(dir / "gallery") + ", fsync: false }\n"
                       "gallery: { storage: gallery }\n"
                       "pipelines:\n  orb:\n    features: { type: orb }\n    index: { type: bruteforce }\n"
                       "limits: { workers: 1 }\n" + extra);
    return config;
}

// Issue 22: the transport's exception was read after its library had been unloaded, so a port in
// use ended `serve` with SIGSEGV and a stderr cut short at "sightline: ".
TEST(CliServe, PortInUseIsAClearErrorNotACrash) {
    const int holder = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(holder, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    ASSERT_EQ(::bind(holder, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(holder, 4), 0);
    socklen_t len = sizeof addr;
    ASSERT_EQ(::getsockname(holder, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    const std::string listen = "127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

    TempDir dir("sightline-cli-port");
    const fs::path config = write_config(dir);
    const CliResult r = run_cli({"--config", config.string(), "serve", "--set",
                                 "transports=[{type: http, listen: \"" + listen + "\"}]"},
                                dir.path(), {}, std::chrono::seconds(60));
    ::close(holder);
    ASSERT_TRUE(r.exit_code.has_value()) << r.describe();
    EXPECT_EQ(*r.exit_code, 1) << r.describe();
    std::string line;
    std::istringstream lines(r.err);
    for (std::string l; std::getline(lines, l);)
        if (l.find(listen) != std::string::npos && l.find("in use") != std::string::npos) line = l;
    EXPECT_FALSE(line.empty()) << "no stderr line names " << listen << " and 'in use'\n" << r.describe();
}

// Issue 22: --log-level warn was applied only after the host was built, so its info lines (the
// built-in default's vocabulary, say) still reached stderr.
TEST(CliLogLevel, WarnSilencesInfoLinesFromTheStart) {
    TempDir dir("sightline-cli-log");
    const auto images = gallery_images();
    ASSERT_FALSE(images.empty());
    const std::vector<std::string> env{"SIGHTLINE_DATA=" + (dir / "data").string(), "SIGHTLINE_SHARE="};
    // Without the flag the same run logs at info (so the checks below can fail).
    CliResult info = run_cli({"query", images[0].string()}, dir.path(), env);
    ASSERT_EQ(info.exit_code, std::optional<int>(0)) << info.describe();
    ASSERT_THAT(info.err, HasSubstr("[info]")) << info.describe();

    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"--log-level", "warn", "query", images[0].string()},
          std::vector<std::string>{"query", images[0].string(), "--log-level", "warn"},
          std::vector<std::string>{"--log-level", "warn", "config", "check"}}) {
        CliResult r = run_cli(args, dir.path(), env);
        ASSERT_EQ(r.exit_code, std::optional<int>(0)) << r.describe();
        EXPECT_THAT(r.err, Not(HasSubstr("[info]"))) << r.describe();
    }
    // A config file's own logging.level does not override the flag.
    const fs::path config = write_config(dir, "logging: { level: debug }\n");
    CliResult r =
        run_cli({"--config", config.string(), "--log-level", "warn", "query", images[0].string()}, dir.path());
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << r.describe();
    EXPECT_THAT(r.err, Not(HasSubstr("[info]"))) << r.describe();
    EXPECT_THAT(r.err, Not(HasSubstr("[debug]"))) << r.describe();
}

// Issue 22: a library that is not a plugin, earlier in plugins.paths than the real plugin of its
// name, was passed over in silence; the user sees a warning naming both files.
TEST(CliPlugins, ANonPluginShadowingARealOneIsWarnedAbout) {
    TempDir dir("sightline-cli-shadow");
    const fs::path shadow_dir = dir / "mine";
    fs::create_directories(shadow_dir);
    fs::copy_file(fixture_bad_dir() / "libsightline_features_notaplugin.so",
                  shadow_dir / "libsightline_features_orb.so");
    const fs::path config = write_config(dir);
    const std::string paths = "plugins.paths=[" + yq(shadow_dir) + ", " + yq(plugin_dir()) + "]";
    CliResult r = run_cli({"--config", config.string(), "--set", paths, "config", "check"}, dir.path());
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << r.describe();
    EXPECT_THAT(r.err, HasSubstr("warn")) << r.describe();
    EXPECT_THAT(r.err, HasSubstr((shadow_dir / "libsightline_features_orb.so").string())) << r.describe();
    EXPECT_THAT(r.err, HasSubstr((plugin_dir() / "libsightline_features_orb.so").string())) << r.describe();
}

// Issue 22: a truncated copy of a plugin crashed every command in dlopen (SIGBUS).
TEST(CliPlugins, ATruncatedPluginIsRefusedNotACrash) {
    TempDir dir("sightline-cli-truncated");
    const fs::path cut_dir = dir / "cut";
    const Bytes all = read_bytes(plugin_dir() / "libsightline_features_orb.so");
    write_bytes(cut_dir / "libsightline_features_orb.so", Bytes(all.begin(), all.begin() + 20000));
    const fs::path config = write_config(dir);
    const std::string paths = "plugins.paths=[" + yq(cut_dir) + ", " + yq(plugin_dir()) + "]";
    CliResult r = run_cli({"--config", config.string(), "--set", paths, "plugins"}, dir.path());
    ASSERT_EQ(r.exit_code, std::optional<int>(0)) << r.describe();
    EXPECT_THAT(r.out, HasSubstr((cut_dir / "libsightline_features_orb.so").string() + " is not a sightline plugin"))
        << r.describe();
}

}  // namespace
