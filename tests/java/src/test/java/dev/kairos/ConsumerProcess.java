package dev.kairos;

import java.io.File;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/** A group member in its own JVM, so a test can SIGKILL it as a crashed service. */
public final class ConsumerProcess {
    private ConsumerProcess() {}

    /** Starts {@link #main} in a child JVM with this test's classpath. */
    static Process start(String bootstrap, String group, String topic, String... props) throws Exception {
        String java = System.getProperty("java.home") + File.separator + "bin" + File.separator + "java";
        List<String> cmd = new ArrayList<>(List.of(java, "-Xmx128m", "-cp", System.getProperty("java.class.path"),
                "-Dlog4j2.configurationFile=" + System.getProperty("log4j2.configurationFile", ""),
                ConsumerProcess.class.getName(), bootstrap, group, topic));
        cmd.addAll(List.of(props));
        return new ProcessBuilder(cmd).inheritIO().start();
    }

    /** Subscribes and polls until killed. Arguments: bootstrap group topic [key=value ...]. */
    public static void main(String[] args) {
        List<Object> props = new ArrayList<>();
        for (int i = 3; i < args.length; i++) {
            String[] kv = args[i].split("=", 2);
            props.add(kv[0]);
            props.add(kv[1]);
        }
        try (var c = Clients.consumer(args[0], args[1], props.toArray())) {
            c.subscribe(List.of(args[2]));
            while (true) {
                c.poll(Duration.ofMillis(100));
            }
        }
    }
}
