package dev.kairos;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.PrintStream;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;

import org.apache.kafka.common.utils.internals.Exit;

/**
 * Runs one of Kafka's CLI tools (the class behind a {@code bin/kafka-*.sh} script) in this JVM,
 * with its stdin given and its stdout/stderr captured: a JVM per call would cost seconds each.
 * {@code Exit.exit} is turned into a return code, as the tools exit through it.
 */
final class KafkaTools {
    record Run(int code, String out, String err) {
        Run ok(String what) {
            if (code != 0) {
                throw new AssertionError(what + " exited " + code + "\nstdout:\n" + out + "\nstderr:\n" + err);
            }
            return this;
        }
    }

    private static final class ExitCalled extends RuntimeException {
        final int code;

        ExitCalled(int code) {
            super(null, null, false, false);
            this.code = code;
        }
    }

    private KafkaTools() {}

    static synchronized Run run(String mainClass, String stdin, String... args) throws Exception {
        PrintStream oldOut = System.out;
        PrintStream oldErr = System.err;
        InputStream oldIn = System.in;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        // The first exit decides the code: some tools catch Throwable around their body and
        // call exit again (with 1) when the first exit's exception passes through.
        int[] first = {-1};
        Exit.Procedure exit = (c, message) -> {
            if (first[0] < 0) {
                first[0] = c;
            }
            throw new ExitCalled(c);
        };
        Exit.setExitProcedure(exit);
        Exit.setHaltProcedure(exit);
        // Tools close their clients in shutdown hooks (the console producer flushes there): run
        // them when the tool is done, as a JVM exit would.
        java.util.List<Runnable> hooks = new java.util.ArrayList<>();
        Exit.setShutdownHookAdder((name, hook) -> hooks.add(hook));
        int code = 0;
        try {
            System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
            System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
            System.setIn(new ByteArrayInputStream(stdin.getBytes(StandardCharsets.UTF_8)));
            Method main = Class.forName(mainClass).getMethod("main", String[].class);
            try {
                main.invoke(null, (Object) args);
            } catch (java.lang.reflect.InvocationTargetException e) {
                if (!(e.getCause() instanceof ExitCalled)) {
                    throw e;
                }
            }
            code = Math.max(first[0], 0);
            hooks.forEach(Runnable::run);
        } finally {
            System.out.flush();
            System.err.flush();
            System.setOut(oldOut);
            System.setErr(oldErr);
            System.setIn(oldIn);
            Exit.resetExitProcedure();
            Exit.resetHaltProcedure();
            Exit.resetShutdownHookAdder();
        }
        return new Run(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }
}
