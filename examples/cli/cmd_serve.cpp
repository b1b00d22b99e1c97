// deepseek-cli serve: an OpenAI-compatible HTTP server over generate::Scheduler (continuous
// batching on a shared paged KV pool).
//
//   serve --model DIR [--host 127.0.0.1] [--port 8080] [--max-batch N] [--ctx N] [--backend cpu|cuda]
//         [--threads N] [--max-queue N] [--pool-tokens N] [--max-step-tokens N] [--template auto|v3|r1]
//         [--model-name NAME] [--activations f32|bf16] [--cache-dtype bf16|f32|fp8] [--quiet]
//
// --backend cuda (a build with the CUDA backend) keeps the model and the shared KV pool on the
// current GPU (scheduler_runner.hpp); the scheduler thread runs the forwards, the HTTP threads only
// queue requests and read streamed text.
//
//   POST /v1/chat/completions   messages through the model's chat template (V3, or R1 with its
//                               reasoning returned as reasoning_content); openai_api.hpp lists the fields
//   POST /v1/completions        a text prompt (BOS added as tokenizer_config says) or token ids
//   GET  /v1/models, GET /health (with the scheduler's running / waiting counts and free pool blocks)
// stream: true answers with server-sent events ("data: {chunk}\n\n", then "data: [DONE]\n\n").
// Errors are OpenAI's {"error": {"message", "type", "param", "code"}}: 400 for a bad request (bad
// JSON, a field of the wrong type or range, a prompt + max_tokens beyond --ctx), 503 when
// --max-batch sequences run and --max-queue wait, 404 for other paths, 413 for a body over 8 MiB.
// A streaming client that disconnects has its sequence cancelled at the next token. --port 0
// takes any free port; the line "listening on http://HOST:PORT" on stderr says which.
// Binds to loopback unless --host says otherwise. SIGINT / SIGTERM stop it.
#include "command.hpp"
#include "model_loading.hpp"
#include "openai_api.hpp"

#include <deepseek/generate/scheduler.hpp>

#include <cstdio>
#include <string>

#if DEEPSEEK_CLI_HAVE_HTTPLIB
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <pthread.h>
#include <sys/socket.h>
#endif

namespace {

using namespace deepseek;

#if DEEPSEEK_CLI_HAVE_HTTPLIB

using Json = nlohmann::ordered_json;

constexpr size_t kMaxBodyBytes = size_t(8) << 20;

// What the scheduler thread hands one HTTP request: text as it comes, then how it ended.
struct Channel {
  std::mutex mu;
  std::condition_variable cv;
  std::string text;  // generated, not yet taken by the handler
  std::optional<generate::FinishOutput> finish;
  std::atomic<bool> gone{false};  // the client disconnected
};

struct ServerState {
  const tokenizer::Tokenizer& tok;
  cli::SchedulerRunner& sched;
  bool r1;
  std::string model_id;
  int64_t ctx;
  std::time_t started = std::time(nullptr);
  std::atomic<uint64_t> next_id{1};
};

std::string dump(const Json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

void send_error(httplib::Response& res, int status, const std::string& message, const std::string& param = {},
                const std::string& type = "invalid_request_error") {
  res.status = status;
  res.set_content(serve::error_body(message, param, type), "application/json");
}

Json usage(const generate::FinishOutput& f) {
  return {{"prompt_tokens", f.prompt_tokens}, {"completion_tokens", f.completion_tokens},
          {"total_tokens", f.prompt_tokens + f.completion_tokens}};
}

const char* finish_name(const generate::FinishOutput& f) { return f.reason == generate::FinishReason::length ? "length" : "stop"; }

// The prompt's ids and the request's generation options, checked against the context.
generate::Request make_request(ServerState& S, const serve::ApiRequest& r) {
  std::vector<int32_t> ids;
  const char* prompt_param = r.endpoint == serve::Endpoint::chat ? "messages" : "prompt";
  try {
    std::string text;
    if (r.endpoint == serve::Endpoint::chat) {
      chat::ChatOptions co;
      co.add_generation_prompt = true;
      if (!S.tok.bos_token().empty()) co.bos_token = S.tok.bos_token();
      text = S.r1 ? chat::format_r1(r.messages, co) : chat::format_v3(r.messages, co);
      // The template writes BOS itself.
      for (auto id : S.tok.encode(text, false)) ids.push_back(int32_t(id));
    } else if (r.prompt) {
      for (auto id : S.tok.encode(*r.prompt, S.tok.add_bos_token())) ids.push_back(int32_t(id));
    } else {
      ids = r.prompt_ids;
    }
  } catch (const Error& e) {
    throw serve::ApiError(400, e.what(), prompt_param);
  }
  const int64_t P = int64_t(ids.size()), V = S.sched.config().vocab_size;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] >= V) throw serve::ApiError(400, "prompt[" + std::to_string(i) + "] = " + std::to_string(ids[i]) + " is not below the vocabulary size " + std::to_string(V), prompt_param);
  if (P >= S.ctx)
    throw serve::ApiError(400, "this model's context here is " + std::to_string(S.ctx) + " tokens (--ctx), and the prompt alone has " +
                                   std::to_string(P),
                          prompt_param);
  // OpenAI's defaults: chat answers as long as the context allows, completions 16 tokens.
  const int64_t N = r.max_tokens ? *r.max_tokens : r.endpoint == serve::Endpoint::chat ? S.ctx - P : std::min<int64_t>(16, S.ctx - P);
  if (N > S.ctx - P)
    throw serve::ApiError(400, "this model's context here is " + std::to_string(S.ctx) + " tokens (--ctx); the prompt has " +
                                   std::to_string(P) + " and max_tokens asks for " + std::to_string(N) + " more",
                          "max_tokens");
  generate::Request q;
  q.prompt = std::move(ids);
  q.options.max_new_tokens = N;
  q.options.sampling = r.sampling;
  if (!r.sampling.greedy && !r.seed_given) q.options.sampling.seed = std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32);
  q.options.stop = r.stop;
  q.options.stop_at_eos = !r.ignore_eos;
  return q;
}

// Submits; the scheduler's refusals become 400 (a request that can never run) or 503 (busy).
uint64_t submit(ServerState& S, generate::Request q, const std::shared_ptr<Channel>& ch) {
  q.on_token = [ch](const generate::TokenOutput& t) {
    if (ch->gone.load()) return false;
    std::lock_guard<std::mutex> lock(ch->mu);
    ch->text += t.text;
    ch->cv.notify_all();
    return true;
  };
  q.on_finish = [ch](const generate::FinishOutput& f) {
    std::lock_guard<std::mutex> lock(ch->mu);
    ch->text += f.text;
    ch->finish = f;
    ch->cv.notify_all();
  };
  try {
    return S.sched.submit(std::move(q));
  } catch (const generate::QueueFull& e) {
    throw serve::ApiError(503, e.what(), {}, "server_overloaded");
  } catch (const Error& e) {
    throw serve::ApiError(400, e.what());
  }
}

// One streamed request: turns the channel's text into SSE chunks of the endpoint's format.
struct Stream {
  std::shared_ptr<Channel> ch;
  serve::Endpoint endpoint;
  bool include_usage;
  std::string id, model_id;
  std::time_t created;
  chat::ThinkingSplitter split;
  bool sent_role = false;

  Json chunk(const Json& choice) const {
    const bool is_chat = endpoint == serve::Endpoint::chat;
    return {{"id", id}, {"object", is_chat ? "chat.completion.chunk" : "text_completion"}, {"created", created}, {"model", model_id},
            {"choices", Json::array({choice})}};
  }
  static std::string event(const Json& j) { return "data: " + dump(j) + "\n\n"; }

  void text_events(const chat::ThinkingSplitter::Parts& p, std::string& out) const {
    if (endpoint == serve::Endpoint::completions) {
      if (!p.content.empty()) out += event(chunk({{"index", 0}, {"text", p.content}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
      return;
    }
    if (!p.reasoning.empty())
      out += event(chunk({{"index", 0}, {"delta", {{"reasoning_content", p.reasoning}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
    if (!p.content.empty())
      out += event(chunk({{"index", 0}, {"delta", {{"content", p.content}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
  }

  // Waits up to 100 ms for text; returns the events to send and whether the stream is complete.
  bool next(std::string& out) {
    std::string text;
    std::optional<generate::FinishOutput> fin;
    {
      std::unique_lock<std::mutex> lock(ch->mu);
      ch->cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return !ch->text.empty() || ch->finish; });
      text.swap(ch->text);
      fin = ch->finish;
    }
    if (endpoint == serve::Endpoint::chat && !sent_role) {
      out += event(chunk({{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"logprobs", nullptr}, {"finish_reason", nullptr}}));
      sent_role = true;
    }
    if (!text.empty()) text_events(split.push(text), out);
    if (!fin) return false;
    text_events(split.finish(), out);
    if (fin->reason == generate::FinishReason::error) {
      out += "data: " + serve::error_body(fin->error, {}, "server_error") + "\n\n";
    } else {
      const Json last = endpoint == serve::Endpoint::chat
                            ? Json{{"index", 0}, {"delta", Json::object()}, {"logprobs", nullptr}, {"finish_reason", finish_name(*fin)}}
                            : Json{{"index", 0}, {"text", ""}, {"logprobs", nullptr}, {"finish_reason", finish_name(*fin)}};
      out += event(chunk(last));
      if (include_usage) {
        Json u = chunk(Json::object());
        u["choices"] = Json::array();
        u["usage"] = usage(*fin);
        out += event(u);
      }
    }
    out += "data: [DONE]\n\n";
    return true;
  }
};

void handle_generation(ServerState& S, const httplib::Request& req, httplib::Response& res, serve::Endpoint endpoint) {
  const serve::ApiRequest r = serve::parse_request(req.body, endpoint);
  generate::Request q = make_request(S, r);
  auto ch = std::make_shared<Channel>();
  const uint64_t sid = submit(S, std::move(q), ch);
  const bool is_chat = endpoint == serve::Endpoint::chat;
  const std::string id = (is_chat ? "chatcmpl-" : "cmpl-") + std::to_string(S.next_id++);
  if (r.stream) {
    auto st = std::make_shared<Stream>(Stream{ch, endpoint, r.include_usage, id, S.model_id, std::time(nullptr),
                                              chat::ThinkingSplitter(is_chat && S.r1), false});
    res.set_header("Cache-Control", "no-cache");
    cli::SchedulerRunner* sched = &S.sched;
    res.set_chunked_content_provider(
        "text/event-stream",
        [st](size_t, httplib::DataSink& sink) {
          std::string out;
          const bool done = st->next(out);
          if (!out.empty() && !sink.write(out.data(), out.size())) return false;  // the client is gone
          if (done) sink.done();
          return true;
        },
        [ch, sched, sid](bool success) {
          if (success) return;
          ch->gone = true;
          sched->cancel(sid);
        });
    return;
  }
  generate::FinishOutput fin;
  std::string text;
  {
    std::unique_lock<std::mutex> lock(ch->mu);
    ch->cv.wait(lock, [&] { return ch->finish.has_value(); });
    fin = *ch->finish;
    text = ch->text;
  }
  if (fin.reason == generate::FinishReason::error) return send_error(res, 500, fin.error, {}, "server_error");
  Json choice;
  if (is_chat) {
    chat::ThinkingSplitter split(S.r1);
    auto a = split.push(text), b = split.finish();
    Json message = {{"role", "assistant"}, {"content", a.content + b.content}};
    if (S.r1) message["reasoning_content"] = a.reasoning + b.reasoning;
    choice = {{"index", 0}, {"message", message}, {"logprobs", nullptr}, {"finish_reason", finish_name(fin)}};
  } else {
    choice = {{"index", 0}, {"text", text}, {"logprobs", nullptr}, {"finish_reason", finish_name(fin)}};
  }
  const Json body = {{"id", id}, {"object", is_chat ? "chat.completion" : "text_completion"}, {"created", std::time(nullptr)},
                     {"model", S.model_id}, {"choices", Json::array({choice})}, {"usage", usage(fin)}};
  res.set_content(dump(body), "application/json");
}

// Every handler answers errors in OpenAI's format, whatever was thrown.
template <class Fn>
httplib::Server::Handler guarded(Fn fn) {
  return [fn](const httplib::Request& req, httplib::Response& res) {
    try {
      fn(req, res);
    } catch (const serve::ApiError& e) {
      send_error(res, e.status, e.what(), e.param, e.type);
    } catch (const std::bad_alloc&) {
      send_error(res, 503, "out of memory", {}, "server_error");
    } catch (const std::exception& e) {
      send_error(res, 500, e.what(), {}, "server_error");
    }
  };
}

int run_serve(int argc, char** argv) {
  cli::Args args(argc, argv, {"quiet"},
                 {"model", "host", "port", "max-batch", "ctx", "threads", "max-queue", "pool-tokens", "max-step-tokens", "template",
                  "model-name", "activations", "cache-dtype", "backend"});
  if (args.help()) {
    std::printf(
        "usage: deepseek-cli serve --model DIR [--host 127.0.0.1] [--port 8080] [--max-batch N] [--ctx N] [--backend cpu|cuda]\n"
        "         [--threads N] [--max-queue N] [--pool-tokens N] [--max-step-tokens N] [--template auto|v3|r1]\n"
        "         [--model-name NAME] [--activations f32|bf16] [--cache-dtype bf16|f32|fp8] [--quiet]\n");
    return 0;
  }
  args.reject_positional();
  const cli::Backend backend = cli::parse_backend(args);
  cli::apply_threads(args);
  const std::string dir = args.required("model");
  const std::string host = args.get("host", "127.0.0.1");
  const int port = int(args.get_int("port", 8080, 0, 65535));
  if (!std::filesystem::exists(std::filesystem::path(dir) / "tokenizer.json"))
    throw Error("serve needs a tokenizer.json in the model directory", in_file(dir));
  auto ckpt = io::Checkpoint::open(dir);
  const io::ModelConfig& cfg = ckpt->config();
  generate::SchedulerOptions so;
  so.max_batch = int(args.get_int("max-batch", 8, 1, 1024));
  so.max_context = args.get_int("ctx", std::min<int64_t>(4096, cfg.max_position_embeddings), 2, cfg.max_position_embeddings);
  so.max_waiting = args.get_int("max-queue", 64, 0, 65536);
  so.max_step_tokens = args.get_int("max-step-tokens", 512, 1, kMaxPositions);
  // Default: every running sequence can reach the full context, so nothing is ever preempted.
  so.pool_tokens = args.get_int("pool-tokens", int64_t(so.max_batch) * so.max_context, 1, int64_t(1) << 40);
  so.cache_dtype = cli::parse_cache_dtype(args);
  const std::string tmpl = args.get("template", "auto");
  if (tmpl != "auto" && tmpl != "v3" && tmpl != "r1") throw Error("--template must be auto, v3 or r1, got '" + excerpt(tmpl) + "'");
  const ActivationDType activations = cli::parse_activations(args);
  const bool quiet = args.flag("quiet");

  tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(dir);
  // R1's template is the one whose generation prompt opens a <think> block.
  const bool r1 = tmpl == "r1" || (tmpl == "auto" && tok.chat_template().find("<think>") != std::string::npos);
  auto runner = cli::load_scheduler(backend, ckpt, activations, so, &tok);
  cli::SchedulerRunner& sched = *runner;
  std::string name = args.get("model-name", std::filesystem::path(dir).lexically_normal().filename().string());
  if (name.empty()) name = std::filesystem::path(dir).lexically_normal().parent_path().filename().string();
  ServerState S{tok, sched, r1, name, so.max_context};

  // Signals go to one thread that stops the server; every other thread blocks them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  httplib::Server svr;
  // Enough HTTP threads for every running and queued request plus a few for /health and refusals;
  // further connections wait in the listen backlog.
  const size_t http_threads = size_t(std::min<int64_t>(512, so.max_batch + so.max_waiting + 4));
  svr.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  svr.set_payload_max_length(kMaxBodyBytes);
  svr.set_read_timeout(30);
  svr.set_write_timeout(30);
  svr.Post("/v1/chat/completions", guarded([&](const httplib::Request& q, httplib::Response& r) { handle_generation(S, q, r, serve::Endpoint::chat); }));
  svr.Post("/v1/completions", guarded([&](const httplib::Request& q, httplib::Response& r) { handle_generation(S, q, r, serve::Endpoint::completions); }));
  svr.Get("/v1/models", guarded([&](const httplib::Request&, httplib::Response& r) {
    const Json m = {{"id", S.model_id}, {"object", "model"}, {"created", S.started}, {"owned_by", "deepseek.hpp"}, {"max_model_len", S.ctx}};
    r.set_content(dump(Json{{"object", "list"}, {"data", Json::array({m})}}), "application/json");
  }));
  svr.Get("/health", guarded([&](const httplib::Request&, httplib::Response& r) {
    const auto st = S.sched.stats();
    r.set_content(dump(Json{{"status", "ok"},
                            {"running", st.running},
                            {"waiting", st.waiting},
                            {"pool_blocks", st.pool_blocks},
                            {"free_blocks", st.free_blocks},
                            {"generated_tokens", st.generated_tokens},
                            {"preemptions", st.preemptions}}),
                  "application/json");
  }));
  svr.set_error_handler([](const httplib::Request& q, httplib::Response& r) {
    if (!r.body.empty()) return;
    const std::string what = r.status == 404   ? "no route " + q.method + " " + excerpt(q.path)
                             : r.status == 413 ? "the request body is larger than " + std::to_string(kMaxBodyBytes) + " bytes"
                                               : "HTTP error " + std::to_string(r.status);
    r.set_content(serve::error_body(what), "application/json");
  });
  if (!quiet)
    svr.set_logger([](const httplib::Request& q, const httplib::Response& r) {
      std::fprintf(stderr, "%s %s %d\n", q.method.c_str(), excerpt(q.path).c_str(), r.status);
    });

  // Debian's libcpp-httplib listens with a backlog of 5: 32 clients connecting at once overflow it,
  // and the kernel then drops connections (1 s SYN retries, or a reset request). Linux takes a
  // second listen() on the bound socket as a new backlog, so the socket is remembered here.
  int listen_fd = -1;
  svr.set_socket_options([&listen_fd](int sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd = sock;
  });
  const int bound = port == 0 ? svr.bind_to_any_port(host) : (svr.bind_to_port(host, port) ? port : -1);
  if (bound < 0) throw Error("cannot listen on " + host + ":" + std::to_string(port) + " (in use, or not an address of this machine)");
  if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
  std::fprintf(stderr,
               "deepseek-cli serve: listening on http://%s:%d (model %s, backend %s, template %s, max-batch %d, "
               "ctx %lld, pool %lld tokens)\n",
               host.c_str(), bound, S.model_id.c_str(), backend == cli::Backend::cuda ? "cuda" : "cpu",
               r1 ? "r1" : "v3", so.max_batch, static_cast<long long>(so.max_context),
               static_cast<long long>(sched.pool()->num_blocks() * sched.pool()->block_size()));
  std::fflush(stderr);

  std::atomic<bool> stop{false};
  std::thread stepper([&] { sched.serve(stop); });
  std::thread signals([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (stop.load()) return;  // woken by ourselves at shutdown
    std::fprintf(stderr, "deepseek-cli serve: %s, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    svr.stop();
  });
  const bool ok = svr.listen_after_bind();
  stop = true;
  sched.notify();
  stepper.join();
  pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  if (!ok) throw Error("the HTTP server stopped with an error");
  return 0;
}

#else

int run_serve(int, char**) {
  throw Error("this deepseek-cli was built without cpp-httplib, which serve needs (Debian: libcpp-httplib-dev; then reconfigure)");
}

#endif

}  // namespace

DEEPSEEK_CLI_COMMAND("serve", "an OpenAI-compatible HTTP server (chat and text completions, streaming, batched)", run_serve);
