// Compatibility checks for MariaDB Connector/J (JDBC) through portcullis.
//
// Connection details come from the COMPAT_* environment variables that scripts/compat sets;
// every check prints `CHECK <name> <PASS|FAIL|NA> <detail>`. The client certificate and key
// are a PKCS#12 keystore (COMPAT_P12), which scripts/compat makes from the PEM files.
// Build: javac -cp /usr/share/java/mariadb-java-client.jar Check.java

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class Check {
    static final String PATTERN = "0123456789abcdef";
    static boolean failed = false;

    interface Body {
        String run() throws Exception;
    }

    /** What the connector does not implement: reported as NA with this message. */
    static class NotImplemented extends Exception {
        NotImplemented(String message) {
            super(message);
        }
    }

    static String env(String k) {
        String v = System.getenv(k);
        if (v == null) {
            throw new IllegalStateException(k + " is not set");
        }
        return v;
    }

    /** The JDBC URL with every TLS option for a client certificate. */
    static String url(String port, String keystore) {
        return "jdbc:mariadb://[" + env("COMPAT_HOST") + "]:" + port + "/" + env("COMPAT_DB")
                + "?useSsl=true"
                + "&trustServerCertificate=false"
                + "&serverSslCert=" + env("COMPAT_CA")
                + "&keyStore=" + keystore
                + "&keyStoreType=PKCS12"
                + "&keyStorePassword=" + env("COMPAT_P12_PASSWORD")
                + "&useServerPrepStmts=true"
                + "&connectTimeout=30000";
    }

    static Connection connect(String user, String pass, String port, String keystore)
            throws SQLException {
        return DriverManager.getConnection(url(port, keystore), user, pass);
    }

    static Connection app() throws SQLException {
        return connect(env("COMPAT_USER"), env("COMPAT_PASSWORD"), env("COMPAT_PORT"),
                env("COMPAT_P12"));
    }

    static String describe(Throwable t) {
        if (t instanceof SQLException) {
            return ((SQLException) t).getErrorCode() + " " + t.getMessage();
        }
        return "client error: " + t;
    }

    static void report(String name, Body body) {
        try {
            System.out.println("CHECK " + name + " PASS " + body.run());
        } catch (NotImplemented e) {
            System.out.println("CHECK " + name + " NA " + e.getMessage());
        } catch (Exception e) {
            failed = true;
            System.out.println("CHECK " + name + " FAIL " + describe(e).replaceAll("\\s+", " "));
        }
    }

    static Body refused(Integer code, String user, String pass, String port, String keystore) {
        return () -> {
            try (Connection c = connect(user, pass, port, keystore)) {
                throw new IllegalStateException("connected, but the connection must be refused");
            } catch (SQLException e) {
                String text = describe(e).replaceAll("\\s+", " ");
                if (code != null && e.getErrorCode() != code) {
                    throw new IllegalStateException("expected error " + code + ", got: " + text);
                }
                return text;
            }
        };
    }

    static String first(Connection c, String sql) throws SQLException {
        try (Statement s = c.createStatement(); ResultSet r = s.executeQuery(sql)) {
            r.next();
            return r.getString(1);
        }
    }

    /** The Bundle-Version of the driver's jar (2.7's Package carries no version). */
    static String driverVersion() {
        try (java.util.jar.JarFile jar = new java.util.jar.JarFile(new java.io.File(
                org.mariadb.jdbc.Driver.class.getProtectionDomain().getCodeSource()
                        .getLocation().toURI()))) {
            return jar.getManifest().getMainAttributes().getValue("Bundle-Version");
        } catch (Exception e) {
            org.mariadb.jdbc.Driver d = new org.mariadb.jdbc.Driver();
            return d.getMajorVersion() + "." + d.getMinorVersion();
        }
    }

    public static void main(String[] args) throws Exception {
        System.out.println("VERSION MariaDB Connector/J " + driverVersion()
                + " (Java " + System.getProperty("java.version") + ")");
        report("query", () -> {
            try (Connection c = app()) {
                String v = first(c, "SELECT CONCAT(1 + 1, ' as ', CURRENT_USER())");
                if (!v.startsWith("2 as ")) {
                    throw new IllegalStateException("unexpected result " + v);
                }
                return "SELECT 1 + 1 = 2 as " + v.substring(5);
            }
        });
        report("ed25519", () -> {
            try (Connection c = connect(env("COMPAT_ED_USER"), env("COMPAT_ED_PASSWORD"),
                    env("COMPAT_PORT"), env("COMPAT_P12"))) {
                return "logged in as " + first(c, "SELECT CURRENT_USER()");
            }
        });
        report("prepared", () -> {
            try (Connection c = app();
                    PreparedStatement s = c.prepareStatement("SELECT ? + ?, CONCAT(?, '!')")) {
                s.setInt(1, 40);
                s.setInt(2, 2);
                s.setString(3, "hé");
                try (ResultSet r = s.executeQuery()) {
                    r.next();
                    if (r.getLong(1) != 42 || !r.getString(2).equals("hé!")) {
                        throw new IllegalStateException("unexpected row " + r.getLong(1) + ", "
                                + r.getString(2));
                    }
                }
                return "server-side prepared (useServerPrepStmts=true)";
            }
        });
        report("transaction", () -> {
            try (Connection c = app(); Statement s = c.createStatement()) {
                s.execute("CREATE OR REPLACE TABLE compat_java (id INT PRIMARY KEY) ENGINE=InnoDB");
                c.setAutoCommit(false);
                s.execute("INSERT INTO compat_java VALUES (1)");
                c.rollback();
                s.execute("INSERT INTO compat_java VALUES (2)");
                c.commit();
                String ids = first(c, "SELECT GROUP_CONCAT(id) FROM compat_java");
                if (!"2".equals(ids)) {
                    throw new IllegalStateException("rows after rollback+commit: " + ids);
                }
                return "rolled-back row absent, committed row present";
            }
        });
        report("big_result", () -> {
            int n = Integer.parseInt(env("COMPAT_BIG_BYTES")) / PATTERN.length();
            try (Connection c = app()) {
                String v = first(c, "SELECT REPEAT('" + PATTERN + "', " + n + ")");
                if (!v.equals(PATTERN.repeat(n))) {
                    throw new IllegalStateException("got " + v.length() + " bytes, expected "
                            + n * PATTERN.length());
                }
                return v.length() + " bytes in one row, content as expected";
            }
        });
        report("revoked", refused(null, env("COMPAT_USER"), env("COMPAT_PASSWORD"),
                env("COMPAT_PORT"), env("COMPAT_REVOKED_P12")));
        report("wrong_password", refused(1045, env("COMPAT_USER"), "not-the-password",
                env("COMPAT_PORT"), env("COMPAT_P12")));
        report("redirect", refused(4196, env("COMPAT_USER"), env("COMPAT_PASSWORD"),
                env("COMPAT_REDIRECT_PORT"), env("COMPAT_P12")));
        // JDBC has no change-user API; look for one in the driver's own connection class too.
        report("change_user", () -> {
            try (Connection c = app()) {
                Class<?> cls = c.unwrap(org.mariadb.jdbc.MariaDbConnection.class).getClass();
                java.util.List<String> found = new java.util.ArrayList<>();
                for (java.lang.reflect.Method m : cls.getMethods()) {
                    String n = m.getName().toLowerCase();
                    if (n.contains("changeuser") || n.contains("change_user")) {
                        found.add(m.getName());
                    }
                }
                if (!found.isEmpty()) {
                    throw new IllegalStateException(cls.getName() + " now has " + found
                            + ": extend this check");
                }
                throw new NotImplemented("Connector/J " + driverVersion() + " has no change-user"
                        + " API: java.sql.Connection defines none and " + cls.getName()
                        + " has no such method");
            }
        });
        System.exit(failed ? 1 : 0);
    }
}
