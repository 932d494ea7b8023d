package dev.kairos;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * A real {@code kairos serve} process on free local ports with its own data directory, stopped
 * by PID. The binary comes from {@code KAIROS_BIN} (scripts/test.sh builds it first).
 *
 * <p>With {@code KAIROS_JAVA_TARGET=kafka} the same tests run against Apache Kafka 4.4 instead
 * (scripts/kafka-reference.sh, one node): that is how their expectations were checked against
 * the reference. Overrides and restarts are Kairos-only there.
 */
public final class KairosBroker implements AutoCloseable {
    private final Path dir;
    private final int port;
    private final int metricsPort;
    private final int adminPort;
    private final List<String> overrides;
    private Process process;

    private KairosBroker(List<String> overrides) throws IOException {
        this.dir = Files.createTempDirectory("kairos-java-");
        this.port = freePort();
        this.metricsPort = freePort();
        this.adminPort = freePort();
        this.overrides = new ArrayList<>(overrides);
    }

    /** Starts a single broker (combined broker and controller) with {@code key=value} overrides. */
    public static KairosBroker start(String... overrides) throws Exception {
        KairosBroker b = new KairosBroker(List.of(overrides));
        b.launch();
        return b;
    }

    public String bootstrap() {
        return referenceBootstrap != null ? referenceBootstrap : "127.0.0.1:" + port;
    }

    public String metricsUrl() {
        return "http://127.0.0.1:" + metricsPort;
    }

    public Path dir() {
        return dir;
    }

    public String log() {
        try {
            return Files.readString(dir.resolve("broker.log"));
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    public long pid() {
        return process.pid();
    }

    private String referenceBootstrap;

    static boolean againstKafka() {
        return "kafka".equals(System.getenv("KAIROS_JAVA_TARGET"));
    }

    private void launch() throws Exception {
        if (againstKafka()) {
            launchReference();
            return;
        }
        String bin = System.getenv("KAIROS_BIN");
        if (bin == null || bin.isEmpty()) {
            throw new IllegalStateException("KAIROS_BIN is not set: run the suite through scripts/test.sh");
        }
        List<String> cmd = new ArrayList<>(List.of(bin, "serve",
                "--override", "listeners=PLAINTEXT://127.0.0.1:" + port,
                "--override", "log.dirs=" + dir.resolve("data"),
                "--override", "metrics.listener=127.0.0.1:" + metricsPort,
                "--override", "admin.listener=127.0.0.1:" + adminPort,
                // Tests must not wait 3 s for every new group.
                "--override", "group.initial.rebalance.delay.ms=0"));
        for (String o : overrides) {
            cmd.add("--override");
            cmd.add(o);
        }
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.redirectErrorStream(true);
        pb.redirectOutput(ProcessBuilder.Redirect.appendTo(dir.resolve("broker.log").toFile()));
        pb.environment().putIfAbsent("KAIROS_LOG", "info");
        process = pb.start();
        waitReady(Duration.ofSeconds(30));
    }

    private void launchReference() throws Exception {
        Path script = Path.of(System.getProperty("user.dir")).resolve("../../scripts/kafka-reference.sh").normalize();
        Process p = new ProcessBuilder(script.toString(), "start", "--dir", dir.resolve("kafka").toString())
                .redirectError(ProcessBuilder.Redirect.appendTo(dir.resolve("broker.log").toFile()))
                .start();
        String out = new String(p.getInputStream().readAllBytes(), java.nio.charset.StandardCharsets.UTF_8);
        if (p.waitFor() != 0) {
            throw new IllegalStateException("kafka-reference.sh start failed:\n" + log());
        }
        for (String line : out.split("\n")) {
            if (line.startsWith("BOOTSTRAP=")) {
                referenceBootstrap = line.substring("BOOTSTRAP=".length()).strip();
            }
        }
    }

    /** Waits until the broker answers an ApiVersions v0 request. */
    private void waitReady(Duration within) throws Exception {
        long deadline = System.nanoTime() + within.toNanos();
        // size, api_key 18, version 0, correlation 1, client id "t"
        byte[] req = {0, 0, 0, 11, 0, 18, 0, 0, 0, 0, 0, 1, 0, 1, 't'};
        while (System.nanoTime() < deadline) {
            if (!process.isAlive()) {
                throw new IllegalStateException("kairos exited during start-up (" + process.exitValue() + "):\n" + log());
            }
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress("127.0.0.1", port), 200);
                s.setSoTimeout(2000);
                OutputStream out = s.getOutputStream();
                out.write(req);
                out.flush();
                InputStream in = s.getInputStream();
                if (in.readNBytes(4).length == 4) {
                    return;
                }
            } catch (IOException notYet) {
                // not listening yet
            }
            Thread.sleep(20);
        }
        throw new IllegalStateException("kairos did not become ready in " + within + ":\n" + log());
    }

    /** SIGKILL, as a crash. */
    public void kill9() throws InterruptedException {
        process.destroyForcibly();
        process.waitFor(10, TimeUnit.SECONDS);
    }

    /** SIGTERM with a bounded wait, then SIGKILL. */
    public void stop() throws Exception {
        if (referenceBootstrap != null) {
            Path script = Path.of(System.getProperty("user.dir")).resolve("../../scripts/kafka-reference.sh").normalize();
            new ProcessBuilder(script.toString(), "stop", "--dir", dir.resolve("kafka").toString())
                    .redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(dir.resolve("broker.log").toFile()))
                    .start().waitFor();
            referenceBootstrap = null;
            return;
        }
        if (process == null || !process.isAlive()) {
            return;
        }
        process.destroy();
        if (!process.waitFor(15, TimeUnit.SECONDS)) {
            kill9();
        }
    }

    /** Stops (SIGTERM) and starts again on the same ports and data. */
    public void restart() throws Exception {
        stop();
        launch();
    }

    /** Kills (SIGKILL) and starts again on the same ports and data. */
    public void crashAndRestart() throws Exception {
        kill9();
        launch();
    }

    @Override
    public void close() throws Exception {
        stop();
        deleteTree(dir);
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getByName("127.0.0.1"))) {
            return s.getLocalPort();
        }
    }

    private static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        try (var walk = Files.walk(p)) {
            walk.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
        }
    }
}
